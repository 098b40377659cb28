package container

import (
	"context"
	"testing"

	"github.com/nhid/nhid/attestors/container/containerdtest"
)

// BenchmarkAttest measures one attestation of a process in a containerd
// container with the description cached (warm: read /proc/<pid>/cgroup
// and match the ID) and not (cold: also ask containerd for the container,
// its image, the image's layers and the container's snapshot).
func BenchmarkAttest(b *testing.B) {
	d := containerdtest.Start(b)
	srv := newRegistry(b)
	ref, _ := pushImage(b, srv, containerdtest.Image(b, sleeperFor(b), "/bin/sleeper", ""), "team/app:v1")
	c := d.Run(b, d.Pull(b, ref), randomID(b), containerdtest.RunOptions{Labels: map[string]string{"app": "bench"}})
	a := newAttestor(b, Config{ContainerdSocket: d.Socket, Namespace: containerdtest.Namespace})
	ctx := context.Background()
	for _, cold := range []bool{false, true} {
		name := "warm_cache"
		if cold {
			name = "cold_cache"
		}
		b.Run(name, func(b *testing.B) {
			if sels, err := a.Attest(ctx, c.PID); err != nil || len(sels) != 4 {
				b.Fatalf("Attest = %v, %v; want 4 selectors", sels, err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if cold {
					a.cache.Purge()
				}
				if _, err := a.Attest(ctx, c.PID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
