package attestortest

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// NodeCase is the node-attestor suite with its optional expectations.
type NodeCase struct {
	// Verifier is the server half under test.
	Verifier attestor.NodeVerifier
	// NewEvidence returns a fresh agent half holding new, valid evidence
	// on every call (for join tokens: a newly created token).
	NewEvidence func(t *testing.T) attestor.NodeEvidence
	// TrustDomain, if set, is the trust domain every AgentID must be in.
	TrustDomain spiffeid.TrustDomain
}

// RunNode is NodeCase{Verifier: v, NewEvidence: newEvidence}.Run(t).
func RunNode(t *testing.T, v attestor.NodeVerifier, newEvidence func(t *testing.T) attestor.NodeEvidence) {
	t.Helper()
	NodeCase{Verifier: v, NewEvidence: newEvidence}.Run(t)
}

// Run checks that both halves behave as pkg/attestor requires.
func (c NodeCase) Run(t *testing.T) {
	t.Helper()
	t.Run("TypesMatch", c.checkTypes)
	t.Run("ValidEvidenceAttests", func(t *testing.T) { c.attestFresh(t) })
	t.Run("SpentEvidenceIsRefused", c.checkReuse)
	t.Run("ConcurrentReuseSucceedsOnce", c.checkConcurrentReuse)
	t.Run("GarbageIsRefused", c.checkGarbage)
	t.Run("CancelledContextFails", c.checkCancel)
}

func (c NodeCase) checkTypes(t *testing.T) {
	typ := c.Verifier.Type()
	if typ == "" || strings.Contains(typ, "/") {
		t.Fatalf("verifier Type() %q must be one non-empty path segment", typ)
	}
	if _, err := selector.New(typ, "conformance"); err != nil {
		t.Fatalf("verifier Type() %q is not a valid selector type: %v", typ, err)
	}
	if got := c.NewEvidence(t).Type(); got != typ {
		t.Fatalf("evidence Type() = %q, verifier Type() = %q; they must match", got, typ)
	}
}

// Drive runs one attestation the way the agent API does: the evidence's
// first payload, then challenges answered by ev.Respond.
func Drive(ctx context.Context, v attestor.NodeVerifier, ev attestor.NodeEvidence) (attestor.NodeResult, error) {
	payload, err := ev.Evidence(ctx)
	if err != nil {
		return attestor.NodeResult{}, err
	}
	return v.Attest(ctx, payload, ev.Respond)
}

// attestFresh attests new evidence and checks the result.
func (c NodeCase) attestFresh(t *testing.T) (attestor.NodeEvidence, attestor.NodeResult) {
	t.Helper()
	ev := c.NewEvidence(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	res, err := Drive(ctx, c.Verifier, ev)
	if err != nil {
		t.Fatalf("attest valid evidence: %v", err)
	}
	c.checkResult(t, res)
	return ev, res
}

func (c NodeCase) checkResult(t *testing.T, res attestor.NodeResult) {
	t.Helper()
	if res.AgentID.IsZero() {
		t.Fatal("AgentID is zero")
	}
	if !agentid.IsAgent(res.AgentID) {
		t.Errorf("AgentID %q is outside the agent namespace", res.AgentID)
	}
	if !c.TrustDomain.IsZero() && res.AgentID.TrustDomain() != c.TrustDomain {
		t.Errorf("AgentID %q is not in trust domain %q", res.AgentID, c.TrustDomain)
	}
	checkSelectors(t, c.Verifier.Type(), res.Selectors)
}

func (c NodeCase) checkReuse(t *testing.T) {
	ev, res := c.attestFresh(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	again, err := Drive(ctx, c.Verifier, ev)
	if res.CanReattest {
		// Evidence that may be presented again must still be good.
		if err != nil {
			t.Fatalf("re-attesting with CanReattest evidence: %v", err)
		}
		c.checkResult(t, again)
		return
	}
	if !errors.Is(err, attestor.ErrAttestationFailed) {
		t.Fatalf("second use of single-use evidence: err = %v, want ErrAttestationFailed", err)
	}
}

// checkConcurrentReuse races the same single-use evidence from many
// goroutines: exactly one may win, or spent evidence could mint two agents.
func (c NodeCase) checkConcurrentReuse(t *testing.T) {
	ev := c.NewEvidence(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	payload, err := ev.Evidence(ctx)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	const racers = 10
	results := make([]attestor.NodeResult, racers)
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			results[i], errs[i] = c.Verifier.Attest(ctx, payload, ev.Respond)
		})
	}
	wg.Wait()
	wins, canReattest := 0, false
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
			canReattest = results[i].CanReattest
			c.checkResult(t, results[i])
		case !errors.Is(err, attestor.ErrAttestationFailed):
			t.Errorf("racer %d: err = %v, want nil or ErrAttestationFailed", i, err)
		}
	}
	if wins == 0 {
		t.Fatalf("no racer attested valid evidence; first error: %v", errs[0])
	}
	if wins > 1 && !canReattest {
		t.Errorf("%d racers attested the same single-use evidence, want exactly 1", wins)
	}
}

func (c NodeCase) checkGarbage(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"random bytes", randomBytes(t, 64)},
		{"huge 1 MiB", randomBytes(t, 1<<20)},
		{"printable nonsense", []byte("not evidence at all")},
	}
	// A verifier that challenges garbage gets garbage back.
	challenger := func(context.Context, []byte) ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			_, err := c.Verifier.Attest(ctx, tt.payload, challenger)
			if !errors.Is(err, attestor.ErrAttestationFailed) {
				t.Errorf("Attest(%s) err = %v, want ErrAttestationFailed", tt.name, err)
			}
		})
	}
}

func (c NodeCase) checkCancel(t *testing.T) {
	ev := c.NewEvidence(t)
	payload, err := ev.Evidence(context.Background())
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Verifier.Attest(ctx, payload, ev.Respond); err == nil {
		t.Fatal("Attest with a cancelled context succeeded, want an error")
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random bytes: %v", err)
	}
	return b
}
