package agentapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/selector"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// reattestType is a continuously attesting node attestor for tests, the
// shape of the TPM attestor without a TPM: every round sends a nonce; the
// answer SHA-256(nonce) followed by a state name passes and gives the
// selector test_reattest:state:<name>; the answer "tampered" is refused.
const reattestType = "test_reattest"

// reattestInterval is the test attestor's interval, the shortest allowed.
const reattestInterval = time.Second

type reattestVerifier struct{}

func (reattestVerifier) Type() string                    { return reattestType }
func (reattestVerifier) ReattestInterval() time.Duration { return reattestInterval }

func (reattestVerifier) Attest(_ context.Context, payload []byte, _ attestor.Challenger) (attestor.NodeResult, error) {
	id, err := agentid.New(td, reattestType, string(payload))
	if err != nil {
		return attestor.NodeResult{}, fmt.Errorf("%w: %v", attestor.ErrAttestationFailed, err)
	}
	state, _ := json.Marshal(string(payload))
	return attestor.NodeResult{AgentID: id, CanReattest: true, State: state,
		Selectors: []selector.Selector{selector.Must(reattestType + ":state:initial")}}, nil
}

func (reattestVerifier) Reattest(ctx context.Context, node attestor.ReattestNode, challenge attestor.Challenger) (attestor.NodeResult, error) {
	var name string
	if err := json.Unmarshal(node.State, &name); err != nil || node.AgentID.Path() != "/nhid/agent/"+reattestType+"/"+name {
		return attestor.NodeResult{}, fmt.Errorf("%w: state %q does not belong to %s", attestor.ErrAttestationFailed, node.State, node.AgentID)
	}
	nonce := random(16)
	answer, err := challenge(ctx, nonce)
	if err != nil {
		return attestor.NodeResult{}, err
	}
	sum := sha256.Sum256(nonce)
	switch {
	case string(answer) == "tampered":
		return attestor.NodeResult{}, fmt.Errorf("%w: measured state changed", attestor.ErrAttestationFailed)
	case !bytes.HasPrefix(answer, sum[:]) || len(answer) == len(sum):
		return attestor.NodeResult{}, fmt.Errorf("%w: wrong answer", attestor.ErrAttestationFailed)
	}
	sel := selector.Must(reattestType + ":state:" + string(answer[len(sum):]))
	return attestor.NodeResult{AgentID: node.AgentID, CanReattest: true, State: node.State, Selectors: []selector.Selector{sel}}, nil
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return b
}

// goodAnswer answers in state name.
func goodAnswer(name string) func([]byte) []byte {
	return func(nonce []byte) []byte {
		sum := sha256.Sum256(nonce)
		return append(sum[:], name...)
	}
}

func tamperedAnswer([]byte) []byte { return []byte("tampered") }

// reattestHarness serves the test reattest attestor, logging to logs.
func newReattestHarness(t *testing.T, adjust func(*Config)) (*harness, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	h := newHarness(t, withConfig(func(c *Config) {
		c.Verifiers = append(c.Verifiers, reattestVerifier{})
		c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if adjust != nil {
			adjust(c)
		}
	}))
	return h, logs
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// reattestAgent is an agent's side of the Reattest stream: it answers
// every challenge with the current answer function.
type reattestAgent struct {
	answer  atomic.Pointer[func([]byte) []byte]
	answers atomic.Int32
	ended   chan error
	cancel  context.CancelFunc
}

// openReattest opens a's Reattest stream, answering with answer.
func openReattest(t *testing.T, a *agent, answer func([]byte) []byte) *reattestAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := a.client.Reattest(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Reattest: %v", err)
	}
	r := &reattestAgent{ended: make(chan error, 1), cancel: cancel}
	r.answer.Store(&answer)
	go func() { r.ended <- r.serve(stream) }()
	t.Cleanup(func() { cancel(); <-r.ended })
	return r
}

func (r *reattestAgent) serve(stream agentv1.AgentService_ReattestClient) error {
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		answer := (*r.answer.Load())(msg.GetChallenge())
		if err := stream.Send(&agentv1.ReattestRequest{ChallengeId: msg.GetChallengeId(), Response: answer}); err != nil {
			return err
		}
		r.answers.Add(1)
	}
}

func (r *reattestAgent) setAnswer(f func([]byte) []byte) { r.answer.Store(&f) }

// streamEnd waits for the stream to end and returns its error (nil for OK).
func (r *reattestAgent) streamEnd(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.ended:
		r.ended <- err // for the cleanup
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case <-time.After(waitTimeout):
		t.Fatal("the Reattest stream did not end")
		return nil
	}
}

// attestReattesting attests node name through the test reattest attestor.
func (h *harness) attestReattesting(name string) *agent {
	h.t.Helper()
	return h.attestWith(reattestType, []byte(name), nil)
}

// waitNode polls the node's record until cond holds.
func waitNode(t *testing.T, h *harness, id spiffeid.ID, what string, cond func(*typesv1.Node) bool) *typesv1.Node {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		n, err := h.store.GetNode(context.Background(), id.String())
		if err != nil {
			t.Fatal(err)
		}
		if cond(n) {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: not %s within %s; record: %v", id, what, waitTimeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func untrusted(n *typesv1.Node) bool {
	return n.GetStatus() == typesv1.NodeStatus_NODE_STATUS_UNTRUSTED
}

func active(n *typesv1.Node) bool {
	return n.GetStatus() == typesv1.NodeStatus_NODE_STATUS_ACTIVE
}

// auditLines returns the log's audit records of event.
func auditLines(logs, event string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "msg=audit") && strings.Contains(l, "event="+event) {
			out = append(out, l)
		}
	}
	return out
}
