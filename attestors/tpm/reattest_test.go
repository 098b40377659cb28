package tpm

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReattest_UnchangedNodeKeepsItsSelectors(t *testing.T) {
	f := newFixture(t, nil)
	ev := f.evidence(t, AKRSA2048)
	res := f.mustAttest(t, ev)
	again, err := f.reattest(t, res, ev.Respond)
	if err != nil {
		t.Fatalf("Reattest: %v", err)
	}
	if diff := cmp.Diff(selectorsOf(res.Selectors), selectorsOf(again.Selectors)); diff != "" {
		t.Errorf("selectors changed (-attest +reattest):\n%s", diff)
	}
	if again.AgentID != res.AgentID {
		t.Errorf("AgentID = %s, want %s", again.AgentID, res.AgentID)
	}
}

func TestReattest_PCRExtendedAfterEnrolmentIsRefused(t *testing.T) {
	tests := []struct {
		name   string
		golden bool
	}{
		{"held to the attested values without golden sets", false},
		{"outside the golden set", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			if tt.golden {
				boot := PCRPolicy{Name: "boot", PCRs: map[int][]string{7: {hexOf(f.tpm.PCR(t, 7))}}}
				f.rebuild(t, func(cfg *VerifierConfig) { cfg.PCRPolicies = []PCRPolicy{boot} })
			}
			ev := f.evidence(t, AKECP256)
			res := f.mustAttest(t, ev)
			if _, err := f.reattest(t, res, ev.Respond); err != nil {
				t.Fatalf("requote before the change: %v", err)
			}
			f.tpm.ExtendPCR(t, 7, []byte("a boot component nobody approved"))
			_, err := f.reattest(t, res, ev.Respond)
			checkRefused(t, f, err, errPCRPolicy, nil)
		})
	}
}

func TestReattest_GoldenSetChangeUpdatesSelectors(t *testing.T) {
	f := newFixture(t, nil)
	before := hexOf(f.tpm.PCR(t, 7))
	// After the update the extended value is computed by the test: a
	// golden set can list a value ahead of the rollout that produces it.
	f.tpm.ExtendPCR(t, 7, []byte("shim 15.8"))
	after := hexOf(f.tpm.PCR(t, 7))
	f.rebuild(t, func(cfg *VerifierConfig) {
		cfg.PCRPolicies = []PCRPolicy{{Name: "shim-15-8", PCRs: map[int][]string{7: {after}}}}
	})
	ev := f.evidence(t, AKECP256)
	res := f.mustAttest(t, ev)
	if !hasSelectorPrefix(res.Selectors, "tpm:pcr_policy:shim-15-8") || before == after {
		t.Fatalf("selectors %v lack the matched golden set", res.Selectors)
	}
	if _, err := f.reattest(t, res, ev.Respond); err != nil {
		t.Fatalf("requote: %v", err)
	}
}

func TestReattest_RefusesStaleOrReusedQuote(t *testing.T) {
	f := newFixture(t, nil)
	ev := f.evidence(t, AKECP256)
	res := f.mustAttest(t, ev)
	var answers [][]byte
	if _, err := f.reattest(t, res, record(ev, &answers)); err != nil {
		t.Fatalf("first requote: %v", err)
	}
	replay := func(context.Context, []byte) ([]byte, error) { return answers[0], nil }
	_, err := f.reattest(t, res, replay)
	checkRefused(t, f, err, errQuote, errQuoteNonce)
}

func TestReattest_RefusesUnusableState(t *testing.T) {
	f := newFixture(t, nil)
	ev := f.evidence(t, AKECP256)
	res := f.mustAttest(t, ev)
	res.State = []byte(strings.Replace(string(res.State), `"version":1`, `"version":7`, 1))
	_, err := f.reattest(t, res, ev.Respond)
	checkRefused(t, f, err, errState, nil)
}
