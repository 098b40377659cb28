package auditlog_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/audit/auditlog"
)

// BenchmarkAuditLogAppend measures the whole write path on bbolt: Record
// from 8 goroutines, group commit by the writer (fsync per batch),
// checkpoints every 1000 records, until Flush returns.
func BenchmarkAuditLogAppend(b *testing.B) {
	const perOp, writers = 20_000, 8
	dir := b.TempDir()
	st := openBolt(b, dir)
	defer st.Close()
	l := start(b, st, filepath.Join(dir, "k"), auditlog.Config{})
	events := make([]audit.Event, perOp)
	for i := range events {
		events[i] = event(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := w; i < perOp; i += writers {
					l.Record(context.Background(), events[i])
				}
			})
		}
		wg.Wait()
		flush(b, l.Log)
	}
	b.ReportMetric(float64(b.N*perOp)/b.Elapsed().Seconds(), "records/s")
	b.StopTimer()
	if err := l.stop(); err != nil {
		b.Fatal(err)
	}
}
