package all

import (
	"context"
	"crypto/x509"
	"log/slog"
	"strings"
	"testing"

	"github.com/nhid/nhid/attestors/tpm"
	"github.com/nhid/nhid/attestors/tpm/tpmtest"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
)

// The TPM attestor built here attests a swtpm through the evidence built
// here, with the trust domain, clock and log of the shared configuration.
func TestNodeEvidence_TPMAttestsAgainstItsVerifier(t *testing.T) {
	tpmtest.Require(t)
	ca := tpmtest.NewCA(t, "nhid test EK CA")
	tp := tpmtest.Start(t, ca)
	vs, err := NodeVerifiers(NodeVerifierConfig{
		TrustDomain: testTD, Tokens: openStore(t), Log: slog.New(slog.DiscardHandler),
		TPM: &tpm.VerifierConfig{EKCAs: []*x509.Certificate{ca.Cert}},
	})
	if err != nil {
		t.Fatalf("NodeVerifiers: %v", err)
	}
	ev, err := NodeEvidence(tpm.Type, NodeEvidenceConfig{TPM: tpm.EvidenceConfig{SWTPM: tp.Addr, AKType: tpm.AKRSA2048}})
	if err != nil {
		t.Fatalf("NodeEvidence: %v", err)
	}
	res, err := attestortest.Drive(context.Background(), verifierFor(t, vs, tpm.Type), ev)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	if want := "spiffe://example.org/nhid/agent/tpm/" + tp.EKHash(t); res.AgentID.String() != want {
		t.Errorf("AgentID = %s, want %s", res.AgentID, want)
	}
}

func TestNodeVerifiers_TPMOnlyWhenConfigured(t *testing.T) {
	vs, err := NodeVerifiers(NodeVerifierConfig{TrustDomain: testTD, Tokens: openStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Type() == tpm.Type {
			t.Fatal("a TPM verifier was built without TPM configuration")
		}
	}
	_, err = NodeVerifiers(NodeVerifierConfig{TrustDomain: testTD, Tokens: openStore(t), TPM: &tpm.VerifierConfig{}})
	if err == nil || !strings.Contains(err.Error(), "node attestor tpm") || !strings.Contains(err.Error(), "EKCAs or EKHashAllowList") {
		t.Errorf("err = %v, want one naming the attestor and what it lacks", err)
	}
}
