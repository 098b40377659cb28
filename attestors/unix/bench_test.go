package unix

import (
	"context"
	"testing"
)

// BenchmarkAttest measures one attestation of a running copy of sleep with
// the hash cache warm (the steady state: a workload reconnecting) and cold
// (first sight of a binary: status, readlink, open and a full SHA-256).
func BenchmarkAttest(b *testing.B) {
	bin := copyBinary(b, sleepBinary(b), b.TempDir(), "bench", nil)
	pid := int32(startSleeper(b, bin, nil).Process.Pid)
	ctx := context.Background()

	b.Run("warm_cache", func(b *testing.B) {
		a := newAttestor(b, Config{})
		if _, err := a.Attest(ctx, pid); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Attest(ctx, pid); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold_cache", func(b *testing.B) {
		a := newAttestor(b, Config{})
		b.ReportAllocs()
		for b.Loop() {
			a.cache = newHashCache(defaultCacheSize)
			if _, err := a.Attest(ctx, pid); err != nil {
				b.Fatal(err)
			}
		}
	})
}
