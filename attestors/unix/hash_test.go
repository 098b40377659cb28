package unix

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// countingHash wraps the real hash, counting calls and optionally holding
// each one until release is closed.
type countingHash struct {
	calls   atomic.Int64
	release chan struct{} // nil: do not hold
}

func (c *countingHash) hash(ctx context.Context, r io.Reader) (string, error) {
	c.calls.Add(1)
	if c.release != nil {
		select {
		case <-c.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return sha256Stream(ctx, r)
}

func TestAttest_CacheHitSkipsHashing(t *testing.T) {
	dir := t.TempDir()
	a := newAttestor(t, Config{})
	counter := &countingHash{}
	a.hash = counter.hash
	binA := copyBinary(t, sleepBinary(t), dir, "a", nil)
	pidA := startSleeper(t, binA, nil).Process.Pid
	pidA2 := startSleeper(t, binA, nil).Process.Pid
	pidB := startSleeper(t, copyBinary(t, sleepBinary(t), dir, "b", []byte("b")), nil).Process.Pid

	steps := []struct {
		name      string
		pid       int
		wantCalls int64
	}{
		{"first attestation hashes", pidA, 1},
		{"same process again is a cache hit", pidA, 1},
		{"another process of the same file is a cache hit", pidA2, 1},
		{"a different binary is hashed", pidB, 2},
		{"and then cached too", pidB, 2},
	}
	for _, s := range steps {
		attest(t, a, s.pid)
		if got := counter.calls.Load(); got != s.wantCalls {
			t.Fatalf("%s: %d hashes so far, want %d", s.name, got, s.wantCalls)
		}
	}
	if got := a.cache.len(); got != 2 {
		t.Errorf("cache holds %d entries, want 2", got)
	}
}

func TestAttest_ConcurrentCallersHashABinaryOnce(t *testing.T) {
	a := newAttestor(t, Config{})
	counter := &countingHash{release: make(chan struct{})}
	a.hash = counter.hash
	bin := copyBinary(t, sleepBinary(t), t.TempDir(), "shared", nil)
	pid := startSleeper(t, bin, nil).Process.Pid
	want := []string{sha256File(t, bin)}

	const callers = 20
	var started, wg sync.WaitGroup
	started.Add(callers)
	for range callers {
		wg.Go(func() {
			started.Done()
			sels, err := a.Attest(context.Background(), int32(pid))
			if err != nil {
				t.Errorf("Attest: %v", err)
				return
			}
			if diff := cmp.Diff(want, values(sels, "sha256")); diff != "" {
				t.Errorf("sha256 (-want +got):\n%s", diff)
			}
		})
	}
	started.Wait()
	// Give the callers a moment to pile up on the held hash. The outcome
	// does not depend on it: latecomers find the result cached.
	time.Sleep(50 * time.Millisecond)
	close(counter.release)
	wg.Wait()
	if got := counter.calls.Load(); got != 1 {
		t.Errorf("binary hashed %d times by %d concurrent callers, want 1", got, callers)
	}
}

// A caller that gives up must not fail the others waiting on the same hash.
func TestAttest_CancelledCallerDoesNotFailOthers(t *testing.T) {
	a := newAttestor(t, Config{})
	held := &countingHash{release: make(chan struct{})}
	first := make(chan struct{})
	var once sync.Once
	a.hash = func(ctx context.Context, r io.Reader) (string, error) {
		once.Do(func() { close(first) })
		return held.hash(ctx, r)
	}
	bin := copyBinary(t, sleepBinary(t), t.TempDir(), "w", nil)
	pid := int32(startSleeper(t, bin, nil).Process.Pid)

	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := a.Attest(leaderCtx, pid)
		leaderErr <- err
	}()
	<-first // the leader's hash is running and held

	followerCtx, cancelFollower := context.WithTimeout(context.Background(), waitTimeout)
	defer cancelFollower()
	followerDone := make(chan []string, 1)
	go func() {
		sels, err := a.Attest(followerCtx, pid)
		if err != nil {
			t.Errorf("follower Attest: %v", err)
		}
		followerDone <- values(sels, "sha256")
	}()

	cancelLeader()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("leader err = %v, want context.Canceled", err)
	}
	close(held.release)
	if diff := cmp.Diff([]string{sha256File(t, bin)}, <-followerDone); diff != "" {
		t.Errorf("follower sha256 (-want +got):\n%s", diff)
	}
}

func TestHashCache_EvictsLeastRecentlyUsed(t *testing.T) {
	c := newHashCache(2)
	k1, k2, k3 := fileKey{ino: 1}, fileKey{ino: 2}, fileKey{ino: 3}
	c.add(k1, "one")
	c.add(k2, "two")
	c.get(k1) // k2 is now the least recently used
	c.add(k3, "three")

	got := map[string]bool{}
	for name, k := range map[string]fileKey{"k1": k1, "k2": k2, "k3": k3} {
		_, got[name] = c.get(k)
	}
	want := map[string]bool{"k1": true, "k2": false, "k3": true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cached keys (-want +got):\n%s", diff)
	}
	if c.len() != 2 {
		t.Errorf("len = %d, want 2", c.len())
	}
}

func TestFileKey_DistinguishesEveryField(t *testing.T) {
	base := fileKey{dev: 1, ino: 2, size: 3, mtimeSec: 4, mtimeNsec: 5, ctimeSec: 6, ctimeNsec: 7}
	variants := []fileKey{base, base, base, base, base, base, base}
	variants[0].dev++
	variants[1].ino++
	variants[2].size++
	variants[3].mtimeSec++
	variants[4].mtimeNsec++
	variants[5].ctimeSec++
	variants[6].ctimeNsec++
	seen := map[string]bool{base.String(): true}
	for i, v := range variants {
		if seen[v.String()] {
			t.Errorf("variant %d collides: %s", i, v)
		}
		seen[v.String()] = true
	}
}
