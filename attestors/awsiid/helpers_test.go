package awsiid

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/nhid/nhid/attestors/awsiid/awsiidtest"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// fixture is one AWS region's signer and a verifier trusting it for the
// default document's account.
type fixture struct {
	signer *awsiidtest.Signer
	doc    awsiidtest.Document
	clock  *clock.Fake
	cfg    VerifierConfig
	v      *Verifier
	logs   *syncBuffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{signer: awsiidtest.NewSigner(t), doc: awsiidtest.NewDocument(), logs: &syncBuffer{}}
	f.clock = clock.NewFake(f.doc.PendingTime.Add(time.Hour))
	f.cfg = VerifierConfig{
		TrustDomain:  testTD,
		Certificates: []*x509.Certificate{f.signer.Cert},
		Accounts:     []string{f.doc.AccountID},
		Clock:        f.clock,
		Log:          slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	f.v = f.newVerifier(t, f.cfg)
	return f
}

func (f *fixture) newVerifier(t *testing.T, cfg VerifierConfig) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// payload is the evidence of doc with the signature text sig, as the
// agent would send it.
func payloadOf(t *testing.T, doc []byte, sig string) []byte {
	t.Helper()
	raw, err := decodeSignature([]byte(sig))
	if err != nil {
		t.Fatal(err)
	}
	data, err := encodePayload(payload{Document: doc, Signature: raw})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// signed is the evidence of d signed by the fixture's region.
func (f *fixture) signed(t *testing.T, d awsiidtest.Document) []byte {
	t.Helper()
	doc := d.Render()
	return payloadOf(t, doc, f.signer.Sign(doc))
}

func (f *fixture) attest(t *testing.T, v *Verifier, data []byte) (attestor.NodeResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return v.Attest(ctx, data, nil)
}

// imdsEvidence serves d, signed by the fixture's region, from a fake IMDS
// and returns the agent half reading it.
func (f *fixture) imdsEvidence(t *testing.T, d awsiidtest.Document) (*Evidence, *awsiidtest.IMDS) {
	t.Helper()
	doc := d.Render()
	imds := awsiidtest.StartIMDS(t, doc, f.signer.Sign(doc))
	ev, err := NewEvidence(EvidenceConfig{MetadataEndpoint: imds.URL()})
	if err != nil {
		t.Fatalf("NewEvidence: %v", err)
	}
	return ev, imds
}

// randomInstanceID is a fresh 17-hex-digit instance ID.
func randomInstanceID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 9)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "i-" + hex.EncodeToString(b)[:17]
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
