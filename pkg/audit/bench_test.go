package audit_test

import (
	"testing"

	"github.com/nhid/nhid/pkg/audit"
)

// BenchmarkAuditVerify measures client-side verification: hashing and
// linking every record and checking a checkpoint every 1000 records.
func BenchmarkAuditVerify(b *testing.B) {
	const n = 100_000
	k := newKey(b)
	l := newLog(b).announce(k)
	for l.add(999); len(l.records) < n; l.add(1000) {
		l.checkpoint(k)
	}
	l.checkpoint(k)
	cfg := audit.VerifyConfig{TrustedKeys: []audit.TrustedKey{k.trusted()}, Checkpoints: l.cps, Head: l.head()}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := verify(cfg, l.records); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(l.records))/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAuditChainLink measures what the writer adds per record: the
// canonical encoding and SHA-256.
func BenchmarkAuditChainLink(b *testing.B) {
	l := newLog(b).add(1)
	r := l.records[0]
	c := audit.NewChain(0, nil)
	b.ReportAllocs()
	for b.Loop() {
		c.Link(r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
