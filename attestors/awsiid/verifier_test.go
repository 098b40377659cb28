package awsiid

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/attestors/awsiid/awsiidtest"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/selector"
)

func TestVerifier_Conformance(t *testing.T) {
	f := newFixture(t)
	attestortest.NodeCase{
		Verifier: f.v,
		NewEvidence: func(t *testing.T) attestor.NodeEvidence {
			d := f.doc
			d.InstanceID = randomInstanceID(t)
			ev, _ := f.imdsEvidence(t, d)
			return ev
		},
		TrustDomain: testTD,
	}.Run(t)
}

func TestVerifier_AdmitsASignedDocumentOfAnAllowedAccount(t *testing.T) {
	f := newFixture(t)
	res, err := f.attest(t, f.v, f.signed(t, f.doc))
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	if want := "spiffe://example.org/nhid/agent/aws_iid/123456789012/us-east-1/i-0123456789abcdef0"; res.AgentID.String() != want {
		t.Errorf("AgentID = %s, want %s", res.AgentID, want)
	}
	if !res.CanReattest || !res.TrustOnFirstUse {
		t.Errorf("CanReattest = %v, TrustOnFirstUse = %v; want both true: the document is replayable", res.CanReattest, res.TrustOnFirstUse)
	}
	want := []string{
		"aws_iid:account:123456789012",
		"aws_iid:az:us-east-1b",
		"aws_iid:image_id:ami-0abcdef1234567890",
		"aws_iid:instance_id:i-0123456789abcdef0",
		"aws_iid:instance_type:m5.large",
		"aws_iid:region:us-east-1",
	}
	if diff := cmp.Diff(want, selector.NewSet(res.Selectors...).Strings()); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	if res.State != nil {
		t.Errorf("State = %x, want none: the attestor does not reattest", res.State)
	}
}

func TestVerifier_TriesEveryConfiguredCertificate(t *testing.T) {
	f := newFixture(t)
	other := awsiidtest.NewSigner(t)
	cfg := f.cfg
	cfg.Certificates = []*x509.Certificate{other.Cert, f.signer.Cert}
	d := f.doc
	d.Region, d.AvailabilityZone = "eu-west-1", "eu-west-1a"
	res, err := f.attest(t, f.newVerifier(t, cfg), f.signed(t, d))
	if err != nil {
		t.Fatalf("attest with the second certificate's region: %v", err)
	}
	if !strings.Contains(res.AgentID.String(), "/eu-west-1/") {
		t.Errorf("AgentID = %s, want the document's region in it", res.AgentID)
	}
}

func TestVerifier_RefusesWhatAWSDidNotSignOrTheServerDoesNotAllow(t *testing.T) {
	f := newFixture(t)
	otherRegion := awsiidtest.NewSigner(t)
	doc := f.doc.Render()
	sig := f.signer.Sign(doc)

	otherAccount := f.doc
	otherAccount.AccountID = "210987654321"
	badInstance := f.doc
	badInstance.InstanceID = "i-../../etc"
	garbageSig := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 256))

	tests := []struct {
		name    string
		payload []byte
		cfg     func(*VerifierConfig)
		want    error
		reason  string
	}{
		{"signature of other bytes", payloadOf(t, doc, f.signer.Sign([]byte("{}"))), nil, errSignature, "not made by any configured AWS certificate"},
		{"garbage signature", payloadOf(t, doc, garbageSig), nil, errSignature, ""},
		{"document altered after signing",
			payloadOf(t, bytes.Replace(doc, []byte("m5.large"), []byte("m5.metal"), 1), sig), nil, errSignature, ""},
		{"document re-indented after signing",
			payloadOf(t, bytes.ReplaceAll(doc, []byte(" : "), []byte(": ")), sig), nil, errSignature, ""},
		{"signed with an unconfigured region's key", payloadOf(t, doc, otherRegion.Sign(doc)), nil, errSignature, ""},
		{"account not allowed", f.signed(t, otherAccount), nil, errAccount, "account not allowed: 210987654321"},
		{"region not allowed", f.signed(t, f.doc), func(c *VerifierConfig) { c.Regions = []string{"eu-west-1", "eu-central-1"} },
			errRegion, "region not allowed: us-east-1"},
		{"instance ID unusable", f.signed(t, badInstance), nil, errDocument, ""},
		{"signed non-JSON", payloadOf(t, []byte("not json"), f.signer.Sign([]byte("not json"))), nil, errDocument, ""},
		{"empty", nil, nil, errMalformed, ""},
		{"not JSON", []byte("aws"), nil, errMalformed, ""},
		{"unknown field", []byte(`{"document":"e30=","signature":"AA==","x":1}`), nil, errMalformed, ""},
		{"trailing data", append(f.signed(t, f.doc), []byte("{}")...), nil, errMalformed, ""},
		{"no signature", []byte(`{"document":"e30="}`), nil, errMalformed, ""},
		{"oversized payload", bytes.Repeat([]byte(" "), maxPayload+1), nil, errMalformed, ""},
		{"oversized document", oversizedDocument(t, f), nil, errMalformed, ""},
		{"oversized signature", payloadOfRaw(t, doc, make([]byte, maxSignature+1)), nil, errMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := f.v
			if tt.cfg != nil {
				cfg := f.cfg
				tt.cfg(&cfg)
				v = f.newVerifier(t, cfg)
			}
			_, err := f.attest(t, v, tt.payload)
			if !errors.Is(err, attestor.ErrAttestationFailed) || !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("err = %q, want it to say %q", err, tt.reason)
			}
		})
	}
}

// oversizedDocument is a validly signed document padded past maxDocument.
func oversizedDocument(t *testing.T, f *fixture) []byte {
	t.Helper()
	doc := append(f.doc.Render()[:1], append(bytes.Repeat([]byte(" "), maxDocument), f.doc.Render()[1:]...)...)
	return payloadOfRaw(t, doc, mustDecode(t, f.signer.Sign(doc)))
}

func payloadOfRaw(t *testing.T, doc, sig []byte) []byte {
	t.Helper()
	data, err := encodePayload(payload{Document: doc, Signature: sig})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func mustDecode(t *testing.T, sig string) []byte {
	t.Helper()
	raw, err := decodeSignature([]byte(sig))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerifier_MaxInstanceAge(t *testing.T) {
	f := newFixture(t)
	cfg := f.cfg
	cfg.MaxInstanceAge = 2 * time.Hour
	v := f.newVerifier(t, cfg)
	// The fixture's clock is an hour after the instance started.
	if _, err := f.attest(t, v, f.signed(t, f.doc)); err != nil {
		t.Fatalf("attest an instance started an hour ago: %v", err)
	}
	f.clock.Add(90 * time.Minute)
	_, err := f.attest(t, v, f.signed(t, f.doc))
	if !errors.Is(err, errTooOld) || !strings.Contains(err.Error(), "2h30m0s ago") {
		t.Errorf("attest an instance started 2h30m ago: err = %v, want %v saying how long ago", err, errTooOld)
	}
	// Without the limit, as in SPIRE, age does not matter.
	if _, err := f.attest(t, f.v, f.signed(t, f.doc)); err != nil {
		t.Errorf("attest without max age: %v", err)
	}
	undated := f.doc.Render()
	undated = bytes.Replace(undated, []byte(f.doc.PendingTime.Format(time.RFC3339)), []byte("yesterday"), 1)
	_, err = f.attest(t, v, payloadOf(t, undated, f.signer.Sign(undated)))
	if !errors.Is(err, errDocument) || !strings.Contains(err.Error(), "pendingTime") {
		t.Errorf("attest an undated instance with max age: err = %v, want %v naming pendingTime", err, errDocument)
	}
}

// Fields that only become selectors and that AWS might write in a new
// form are left out rather than refusing the node.
func TestVerifier_LeavesOutUnusableSelectors(t *testing.T) {
	f := newFixture(t)
	d := f.doc
	d.InstanceType, d.ImageID = "", "not an ami"
	res, err := f.attest(t, f.v, f.signed(t, d))
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	for _, s := range selector.NewSet(res.Selectors...).Strings() {
		if strings.HasPrefix(s, "aws_iid:instance_type:") || strings.HasPrefix(s, "aws_iid:image_id:") {
			t.Errorf("selector %s from an unusable field", s)
		}
	}
	if !strings.Contains(f.logs.String(), "leaving out an unusable aws_iid selector") {
		t.Errorf("logs lack the left-out selectors:\n%s", f.logs)
	}
}

func TestNewVerifier_ReportsEveryProblem(t *testing.T) {
	signer := awsiidtest.NewSigner(t)
	_, err := NewVerifier(VerifierConfig{
		Certificates:   []*x509.Certificate{signer.Cert, nil},
		Accounts:       []string{"12345"},
		Regions:        []string{"mars-1"},
		MaxInstanceAge: -time.Second,
	})
	if err == nil {
		t.Fatal("NewVerifier succeeded, want errors")
	}
	for _, want := range []string{
		"TrustDomain: must be set",
		"Certificates[1]: is nil",
		`Accounts[0]: account "12345": must be an AWS account ID of 12 digits`,
		`Regions[0]: region "mars-1"`,
		"MaxInstanceAge: -1s is negative",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}

// A forgotten account list must not admit every AWS account.
func TestNewVerifier_RequiresAccountsAndCertificates(t *testing.T) {
	_, err := NewVerifier(VerifierConfig{TrustDomain: testTD})
	if err == nil || !strings.Contains(err.Error(), "Accounts: must name at least one AWS account") ||
		!strings.Contains(err.Error(), "Certificates: must hold at least one") {
		t.Errorf("err = %v, want one naming Accounts and Certificates", err)
	}
}
