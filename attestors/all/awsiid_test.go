package all

import (
	"context"
	"crypto/x509"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nhid/nhid/attestors/awsiid"
	"github.com/nhid/nhid/attestors/awsiid/awsiidtest"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/clock"
)

// awsiidConfig trusts a fresh test region for the default document's
// account.
func awsiidConfig(t *testing.T) *awsiid.VerifierConfig {
	t.Helper()
	return &awsiid.VerifierConfig{
		Certificates: []*x509.Certificate{awsiidtest.NewSigner(t).Cert},
		Accounts:     []string{awsiidtest.NewDocument().AccountID},
	}
}

// The aws_iid halves built here work together through a fake IMDS, with
// the trust domain and clock of the shared configuration.
func TestNodeEvidence_AWSIIDAttestsAgainstItsVerifier(t *testing.T) {
	signer, doc := awsiidtest.NewSigner(t), awsiidtest.NewDocument()
	raw := doc.Render()
	imds := awsiidtest.StartIMDS(t, raw, signer.Sign(raw))
	vs, err := NodeVerifiers(NodeVerifierConfig{
		TrustDomain: testTD, Tokens: openStore(t), Log: slog.New(slog.DiscardHandler),
		// Two hours after the instance started: past its max age.
		Clock: clock.NewFake(doc.PendingTime.Add(2 * time.Hour)),
		AWSIID: &awsiid.VerifierConfig{
			Certificates: []*x509.Certificate{signer.Cert}, Accounts: []string{doc.AccountID},
			MaxInstanceAge: 3 * time.Hour,
		},
	})
	if err != nil {
		t.Fatalf("NodeVerifiers: %v", err)
	}
	ev, err := NodeEvidence(awsiid.Type, NodeEvidenceConfig{AWSIID: awsiid.EvidenceConfig{MetadataEndpoint: imds.URL()}})
	if err != nil {
		t.Fatalf("NodeEvidence: %v", err)
	}
	res, err := attestortest.Drive(context.Background(), verifierFor(t, vs, awsiid.Type), ev)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	want := "spiffe://example.org/nhid/agent/aws_iid/" + doc.AccountID + "/" + doc.Region + "/" + doc.InstanceID
	if res.AgentID.String() != want || !res.TrustOnFirstUse {
		t.Errorf("AgentID = %s, TrustOnFirstUse = %v; want %s, true", res.AgentID, res.TrustOnFirstUse, want)
	}
}

func TestNodeVerifiers_AWSIIDOnlyWhenConfigured(t *testing.T) {
	vs, err := NodeVerifiers(NodeVerifierConfig{TrustDomain: testTD, Tokens: openStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Type() == awsiid.Type {
			t.Fatal("an aws_iid verifier was built without aws_iid configuration")
		}
	}
	cfg := awsiidConfig(t)
	cfg.Accounts = nil
	_, err = NodeVerifiers(NodeVerifierConfig{TrustDomain: testTD, Tokens: openStore(t), AWSIID: cfg})
	if err == nil || !strings.Contains(err.Error(), "node attestor aws_iid") || !strings.Contains(err.Error(), "Accounts") {
		t.Errorf("err = %v, want one naming the attestor and its Accounts", err)
	}
}

func TestNodeEvidence_AWSIIDReportsABadEndpoint(t *testing.T) {
	_, err := NodeEvidence(awsiid.Type, NodeEvidenceConfig{AWSIID: awsiid.EvidenceConfig{MetadataEndpoint: "imds"}})
	if err == nil || !strings.Contains(err.Error(), "node attestor aws_iid") || !strings.Contains(err.Error(), "MetadataEndpoint") {
		t.Errorf("err = %v, want one naming the attestor and its MetadataEndpoint", err)
	}
}
