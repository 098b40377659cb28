package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/selector"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// measuredAttestor attests a node continuously, as the TPM attestor does:
// every round the node echoes the server's nonce with its measured state,
// which must be "good".
const measuredAttestor = "test_measured"

type measuredVerifier struct{}

func (measuredVerifier) Type() string                    { return measuredAttestor }
func (measuredVerifier) ReattestInterval() time.Duration { return time.Second }

func (v measuredVerifier) Attest(ctx context.Context, payload []byte, challenge attestor.Challenger) (attestor.NodeResult, error) {
	id, err := agentid.New(td, measuredAttestor, string(payload))
	if err != nil {
		return attestor.NodeResult{}, err
	}
	return v.Reattest(ctx, attestor.ReattestNode{AgentID: id}, challenge)
}

func (measuredVerifier) Reattest(ctx context.Context, node attestor.ReattestNode, challenge attestor.Challenger) (attestor.NodeResult, error) {
	nonce := fmt.Appendf(nil, "nonce-%d", time.Now().UnixNano())
	resp, err := challenge(ctx, nonce)
	if err != nil {
		return attestor.NodeResult{}, err
	}
	state, ok := bytes.CutPrefix(resp, append(nonce, ':'))
	if !ok || string(state) != "good" {
		return attestor.NodeResult{}, fmt.Errorf("%w: measured state %q", attestor.ErrAttestationFailed, state)
	}
	sel := selector.Must(measuredAttestor + ":state:good")
	return attestor.NodeResult{AgentID: node.AgentID, CanReattest: true, Selectors: []selector.Selector{sel}}, nil
}

// measuredEvidence reports the node's measured state, which a test can
// change as a tampered boot would.
type measuredEvidence struct {
	host    string
	state   *atomic.Value
	answers *atomic.Int32
}

func (measuredEvidence) Type() string                               { return measuredAttestor }
func (e measuredEvidence) Evidence(context.Context) ([]byte, error) { return []byte(e.host), nil }
func (e measuredEvidence) Respond(_ context.Context, nonce []byte) ([]byte, error) {
	e.answers.Add(1)
	return append(append(nonce, ':'), e.state.Load().(string)...), nil
}

func TestAgent_AnswersContinuousAttestationAndStaysUpWhenUntrusted(t *testing.T) {
	srv := startServer(t, t.TempDir(), measuredVerifier{})
	agentID := "spiffe://example.org/nhid/agent/test_measured/node-1"
	state := &atomic.Value{}
	state.Store("good")
	ev := measuredEvidence{host: "node-1", state: state, answers: &atomic.Int32{}}
	cfg := agentConfig(t, srv, t.TempDir(), "")
	cfg.NodeEvidence = ev
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)
	nodes := adminv1.NewNodeServiceClient(srv.admin)
	node := func() *typesv1.Node {
		resp, err := nodes.GetNode(context.Background(), &adminv1.GetNodeRequest{SpiffeId: agentID})
		if err != nil {
			t.Fatalf("GetNode: %v", err)
		}
		return resp.GetNode()
	}
	// One answer attests the node; more are the server's requotes.
	waitFor(t, "requotes answered", func() bool { return ev.answers.Load() >= 3 })

	state.Store("tampered")
	waitFor(t, "the node untrusted", func() bool { return node().GetStatus() == typesv1.NodeStatus_NODE_STATUS_UNTRUSTED })
	if reason := node().GetStatusReason(); !strings.Contains(reason, `measured state "tampered"`) {
		t.Errorf("status_reason = %q, want the refusal's reason", reason)
	}
	state.Store("good")
	waitFor(t, "the node trusted again", func() bool { return node().GetStatus() == typesv1.NodeStatus_NODE_STATUS_ACTIVE })
	select {
	case err := <-a.done:
		t.Fatalf("agent stopped: %v", err)
	default:
	}
}
