package all

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/attestors/jointoken"
	"github.com/nhid/nhid/attestors/tpm"
	"github.com/nhid/nhid/attestors/unix"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/store/bolt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

func openStore(t *testing.T) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "server.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func types[T interface{ Type() string }](xs []T) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		out = append(out, x.Type())
	}
	return out
}

func TestWorkloadAttestors_BuildsEveryBuiltIn(t *testing.T) {
	as, err := WorkloadAttestors(WorkloadConfig{})
	if err != nil {
		t.Fatalf("WorkloadAttestors: %v", err)
	}
	if diff := cmp.Diff([]string{unix.Type}, types(as)); diff != "" {
		t.Fatalf("types (-want +got):\n%s", diff)
	}
	for _, a := range as {
		t.Run(a.Type(), func(t *testing.T) { attestortest.RunWorkload(t, a) })
	}
}

func TestWorkloadAttestors_ReportsTheFailingAttestor(t *testing.T) {
	_, err := WorkloadAttestors(WorkloadConfig{Unix: unix.Config{MaxHashSize: -1}})
	if err == nil || !strings.Contains(err.Error(), "workload attestor unix") || !strings.Contains(err.Error(), "MaxHashSize") {
		t.Errorf("err = %v, want one naming the unix attestor and its field", err)
	}
}

func TestNodeVerifiers_PairWithEveryEvidenceType(t *testing.T) {
	vs, err := NodeVerifiers(NodeVerifierConfig{TrustDomain: testTD, Tokens: openStore(t),
		TPM:    &tpm.VerifierConfig{EKHashAllowList: []string{strings.Repeat("ab", 32)}},
		AWSIID: awsiidConfig(t)})
	if err != nil {
		t.Fatalf("NodeVerifiers: %v", err)
	}
	got, want := types(vs), NodeEvidenceTypes()
	slices.Sort(got)
	slices.Sort(want)
	// Every agent half has its server half, and each type appears once.
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("evidence types vs verifier types (-evidence +verifiers):\n%s", diff)
	}
	if distinct := slices.Compact(slices.Clone(got)); len(distinct) != len(got) {
		t.Errorf("verifier types %v are not distinct", got)
	}
}

func TestNodeVerifiers_ReportsMissingConfig(t *testing.T) {
	_, err := NodeVerifiers(NodeVerifierConfig{Tokens: openStore(t)})
	if err == nil || !strings.Contains(err.Error(), "TrustDomain") {
		t.Errorf("err = %v, want one naming TrustDomain", err)
	}
}

// The pieces built here work together: a token made for the store is
// accepted by the verifier from NodeVerifiers through the evidence from
// NodeEvidence.
func TestNodeEvidence_JoinTokenAttestsAgainstItsVerifier(t *testing.T) {
	st := openStore(t)
	vs, err := NodeVerifiers(NodeVerifierConfig{TrustDomain: testTD, Tokens: st, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	tok := createToken(t, st)
	ev, err := NodeEvidence(jointoken.Type, NodeEvidenceConfig{JoinToken: tok})
	if err != nil {
		t.Fatalf("NodeEvidence: %v", err)
	}
	res, err := attestortest.Drive(context.Background(), verifierFor(t, vs, ev.Type()), ev)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	want := "spiffe://example.org/nhid/agent/join_token/" + tok[:24]
	if got := res.AgentID.String(); got != want {
		t.Errorf("AgentID = %s, want %s", got, want)
	}
}

func verifierFor(t *testing.T, vs []attestor.NodeVerifier, typ string) attestor.NodeVerifier {
	t.Helper()
	for _, v := range vs {
		if v.Type() == typ {
			return v
		}
	}
	t.Fatalf("no verifier of type %q", typ)
	return nil
}

func TestNodeEvidence_RejectsBadChoices(t *testing.T) {
	secretish := "0123456789abcdef01234567.not-a-valid-secret"
	tests := []struct {
		name, typ string
		cfg       NodeEvidenceConfig
		wantErr   []string
	}{
		{"unknown type lists the known ones", "carrier_pigeon", NodeEvidenceConfig{}, []string{`"carrier_pigeon": unknown`, "join_token", "tpm"}},
		{"join token missing", "join_token", NodeEvidenceConfig{}, []string{"JoinToken: must be set"}},
		{"join token malformed", "join_token", NodeEvidenceConfig{JoinToken: secretish}, []string{"join token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NodeEvidence(tt.typ, tt.cfg)
			if err == nil {
				t.Fatal("NodeEvidence succeeded, want an error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %q, want it to contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "not-a-valid-secret") {
				t.Errorf("err = %q echoes the token", err)
			}
		})
	}
}
