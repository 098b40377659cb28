package audit_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/audit"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// t0 is the time of the test records, in unix nanoseconds.
const t0 = int64(1_800_000_000_123_456_789)

// testKey is a checkpoint key and its PKIX encoding.
type testKey struct {
	priv *ecdsa.PrivateKey
	der  []byte
}

func newKey(tb testing.TB) testKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return testKey{priv: k, der: der}
}

func (k testKey) id() string { return audit.KeyID(k.der) }

// trusted is k as a pinned key.
func (k testKey) trusted() audit.TrustedKey {
	return audit.TrustedKey{PublicKey: k.der, Source: audit.TrustPinned}
}

// log is a chain under construction, as a server would append it.
type log struct {
	tb      testing.TB
	chain   *audit.Chain
	records []*typesv1.AuditRecord
	cps     []*typesv1.AuditCheckpoint
}

func newLog(tb testing.TB) *log { return &log{tb: tb, chain: audit.NewChain(0, nil)} }

// add appends n ordinary records.
func (l *log) add(n int) *log {
	for range n {
		seq := uint64(len(l.records) + 1)
		l.addEvent(audit.Event{
			Actor: "spiffe://example.org/agent", OnBehalfOf: "alice@example.org", Action: audit.ActionGrantDecide,
			Target: fmt.Sprintf("grant-%d", seq), Outcome: audit.OutcomeSuccess, Details: map[string]any{"n": seq},
		})
	}
	return l
}

// addEvent appends one record of ev.
func (l *log) addEvent(ev audit.Event) *log {
	details := ""
	if ev.Details != nil {
		b, err := json.Marshal(ev.Details)
		if err != nil {
			l.tb.Fatal(err)
		}
		details = string(b)
	}
	r := &typesv1.AuditRecord{
		Time: t0 + int64(len(l.records)), Actor: ev.Actor, OnBehalfOf: ev.OnBehalfOf, Action: ev.Action,
		Target: ev.Target, Outcome: ev.Outcome, Reason: ev.Reason, Details: details, Server: "spiffe://example.org/nhid/server",
	}
	l.chain.Link(r)
	l.records = append(l.records, r)
	return l
}

// announce appends the audit.key record of k.
func (l *log) announce(k testKey) *log { return l.addEvent(audit.AnnounceKey(k.der, "server started")) }

// checkpoint signs the current head with k.
func (l *log) checkpoint(k testKey) *log {
	seq, h := l.chain.Head()
	cp, err := audit.SignCheckpoint(k.priv, seq, h, t0+int64(seq), "server-"+k.id()[:4])
	if err != nil {
		l.tb.Fatal(err)
	}
	l.cps = append(l.cps, cp)
	return l
}

func (l *log) head() *audit.Head {
	seq, h := l.chain.Head()
	return &audit.Head{Seq: seq, Hash: h}
}

// clone deep-copies the records and checkpoints, so a test may tamper.
func (l *log) clone() ([]*typesv1.AuditRecord, []*typesv1.AuditCheckpoint) {
	rs := make([]*typesv1.AuditRecord, len(l.records))
	for i, r := range l.records {
		rs[i] = proto.Clone(r).(*typesv1.AuditRecord)
	}
	cs := make([]*typesv1.AuditCheckpoint, len(l.cps))
	for i, c := range l.cps {
		cs[i] = proto.Clone(c).(*typesv1.AuditCheckpoint)
	}
	return rs, cs
}

// verify runs a Verifier over records.
func verify(cfg audit.VerifyConfig, records []*typesv1.AuditRecord) (audit.Summary, error) {
	v := audit.NewVerifier(cfg)
	for _, r := range records {
		if err := v.Add(r); err != nil {
			break
		}
	}
	return v.Finish()
}

func cmpDiff(want, got any) string { return cmp.Diff(want, got) }
