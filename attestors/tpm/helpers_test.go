package tpm

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/nhid/nhid/attestors/tpm/tpmtest"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/selector"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds one attestation against swtpm.
const waitTimeout = 30 * time.Second

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// syncBuffer collects log output from concurrent attestations.
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

// fixture is a swtpm with an EK certificate from ca, and a verifier
// trusting ca.
type fixture struct {
	ca   *tpmtest.CA
	tpm  *tpmtest.TPM
	logs *syncBuffer
	cfg  VerifierConfig
	v    *Verifier
}

// newFixture starts a TPM certified by a fresh CA; adjust changes the
// verifier's configuration before it is built.
func newFixture(t *testing.T, adjust func(*VerifierConfig)) *fixture {
	t.Helper()
	tpmtest.Require(t)
	f := &fixture{ca: tpmtest.NewCA(t, "nhid test EK CA"), logs: &syncBuffer{}}
	f.tpm = tpmtest.Start(t, f.ca)
	cfg := VerifierConfig{
		TrustDomain: testTD,
		EKCAs:       []*x509.Certificate{f.ca.Cert},
		Log:         slog.New(slog.NewTextHandler(f.logs, nil)),
	}
	f.cfg = cfg
	f.rebuild(t, adjust)
	return f
}

// rebuild replaces the verifier with one whose configuration adjust
// changed from the fixture's, as an operator changing the configuration.
func (f *fixture) rebuild(t testing.TB, adjust func(*VerifierConfig)) {
	t.Helper()
	cfg := f.cfg
	if adjust != nil {
		adjust(&cfg)
	}
	f.v = newVerifier(t, cfg)
}

func newVerifier(t testing.TB, cfg VerifierConfig) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// evidence returns an agent half on the fixture's TPM.
func (f *fixture) evidence(t testing.TB, ak AKType) *Evidence {
	t.Helper()
	return newEvidence(t, f.tpm, ak)
}

func newEvidence(t testing.TB, tp *tpmtest.TPM, ak AKType) *Evidence {
	t.Helper()
	ev, err := NewEvidence(EvidenceConfig{SWTPM: tp.Addr, AKType: ak, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("NewEvidence: %v", err)
	}
	return ev
}

// attest runs the whole protocol between ev and the fixture's verifier.
func (f *fixture) attest(t testing.TB, ev attestor.NodeEvidence) (attestor.NodeResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return attestortest.Drive(ctx, f.v, ev)
}

// mustAttest attests and fails the test on refusal.
func (f *fixture) mustAttest(t testing.TB, ev attestor.NodeEvidence) attestor.NodeResult {
	t.Helper()
	res, err := f.attest(t, ev)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	return res
}

// reattest quotes the node of res again, answering with ev.
func (f *fixture) reattest(t testing.TB, res attestor.NodeResult, respond attestor.Challenger) (attestor.NodeResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return f.v.Reattest(ctx, attestor.ReattestNode{AgentID: res.AgentID, State: res.State}, respond)
}

// selectorsOf renders selectors as strings.
func selectorsOf(sels []selector.Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

// pcrSelector is the selector of PCR idx holding value.
func pcrSelector(idx int, value []byte) string {
	return "tpm:pcr:" + strconv.Itoa(idx) + ":" + hex.EncodeToString(value)
}

// hasSelectorPrefix reports whether some selector starts with prefix.
func hasSelectorPrefix(sels []selector.Selector, prefix string) bool {
	for _, s := range sels {
		if strings.HasPrefix(s.String(), prefix) {
			return true
		}
	}
	return false
}
