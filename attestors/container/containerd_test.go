package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nhid/nhid/attestors/container/containerdtest"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/selector"
)

const waitTimeout = 10 * time.Second

// fixture is a private containerd, a loopback registry and a static
// binary to put in images.
type fixture struct {
	d        *containerdtest.Daemon
	registry string // host:port
	sleeper  string
}

var (
	sleeperOnce sync.Once
	sleeperPath string
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{d: containerdtest.Start(t), registry: newRegistry(t), sleeper: sleeperFor(t)}
}

// newRegistry serves an OCI registry on loopback and returns host:port.
func newRegistry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// sleeperFor builds the sleeper once per test binary, into testTmp.
func sleeperFor(t testing.TB) string {
	t.Helper()
	sleeperOnce.Do(func() {
		sleeperPath = containerdtest.BuildStatic(&onceTB{TB: t}, "./attestors/container/containerdtest/sleeper")
	})
	if sleeperPath == "" {
		t.Fatal("building the sleeper failed in an earlier test")
	}
	return sleeperPath
}

// onceTB gives BuildStatic a temp dir that lives as long as the process.
type onceTB struct{ testing.TB }

func (o *onceTB) TempDir() string { return testTmp }

func (f *fixture) push(t *testing.T, img v1.Image, repoTag string) (string, string) {
	t.Helper()
	return pushImage(t, f.registry, img, repoTag)
}

// pushImage writes img to the registry as repo:tag and returns the name
// and the manifest digest.
func pushImage(t testing.TB, registry string, img v1.Image, repoTag string) (string, string) {
	t.Helper()
	ref, err := name.ParseReference(registry + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.String(), d.String()
}

func randomID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func newAttestor(t testing.TB, cfg Config) *Attestor {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func attest(t *testing.T, a *Attestor, pid int32) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sels, err := a.Attest(ctx, pid)
	if err != nil {
		t.Fatalf("Attest(%d): %v", pid, err)
	}
	return selector.NewSet(sels...).Strings()
}

func TestAttest_ContainerdContainerGetsIDImageAndLabels(t *testing.T) {
	f := newFixture(t)
	ref, digest := f.push(t, containerdtest.Image(t, f.sleeper, "/bin/sleeper", ""), "team/app:v1")
	img := f.d.Pull(t, ref)
	id := randomID(t)
	c := f.d.Run(t, img, id, containerdtest.RunOptions{Labels: map[string]string{
		"app": "billing", "tier": "a:b", "odd:key": "left out",
	}})
	a := newAttestor(t, Config{ContainerdSocket: f.d.Socket, Namespace: containerdtest.Namespace})

	want := []string{
		"container:id:" + id,
		"container:image_digest:" + digest,
		"container:image_name:" + ref,
		"container:label:app:billing",
		"container:label:tier:a:b",
	}
	if diff := cmp.Diff(want, attest(t, a, c.PID)); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	gotRef, ok, err := a.ImageRef(context.Background(), c.PID)
	wantRef := f.registry + "/team/app@" + digest
	if err != nil || !ok || gotRef != wantRef {
		t.Errorf("ImageRef = %q, %v, %v; want %q, true, nil", gotRef, ok, err, wantRef)
	}
}

func TestAttest_RetaggedImageLosesItsDigest(t *testing.T) {
	f := newFixture(t)
	ref, _ := f.push(t, containerdtest.Image(t, f.sleeper, "/bin/sleeper", ""), "team/app:latest")
	c := f.d.Run(t, f.d.Pull(t, ref), randomID(t), containerdtest.RunOptions{})
	// The tag now names another image; the container still runs the first.
	f.push(t, containerdtest.Image(t, f.sleeper, "/bin/sleeper", "\x00rebuilt"), "team/app:latest")
	f.d.Pull(t, ref)

	a := newAttestor(t, Config{ContainerdSocket: f.d.Socket, Namespace: containerdtest.Namespace})
	for _, s := range attest(t, a, c.PID) {
		if strings.HasPrefix(s, "container:image_digest:") {
			t.Errorf("got %s for a container whose image name was re-pointed", s)
		}
	}
	if _, ok, err := a.ImageRef(context.Background(), c.PID); ok || err != nil {
		t.Errorf("ImageRef ok = %v, err = %v; want no reference and no error", ok, err)
	}
}

func TestAttest_ContainerInAnotherNamespaceHasOnlyItsID(t *testing.T) {
	f := newFixture(t)
	ref, _ := f.push(t, containerdtest.Image(t, f.sleeper, "/bin/sleeper", ""), "team/app:v1")
	id := randomID(t)
	c := f.d.Run(t, f.d.Pull(t, ref), id, containerdtest.RunOptions{})
	a := newAttestor(t, Config{ContainerdSocket: f.d.Socket, Namespace: "elsewhere"})
	if diff := cmp.Diff([]string{"container:id:" + id}, attest(t, a, c.PID)); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
}

func TestAttest_CachesPerContainerUntilTTL(t *testing.T) {
	f := newFixture(t)
	ref, _ := f.push(t, containerdtest.Image(t, f.sleeper, "/bin/sleeper", ""), "team/app:v1")
	c := f.d.Run(t, f.d.Pull(t, ref), randomID(t), containerdtest.RunOptions{})
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	a := newAttestor(t, Config{ContainerdSocket: f.d.Socket, Namespace: containerdtest.Namespace, Clock: clk, CacheTTL: time.Minute})
	var calls atomic.Int32
	inspect := a.inspect
	a.inspect = func(ctx context.Context, id string) (Info, error) {
		calls.Add(1)
		return inspect(ctx, id)
	}

	first := attest(t, a, c.PID)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if diff := cmp.Diff(first, attest(t, a, c.PID)); diff != "" {
				t.Errorf("cached selectors differ (-first +later):\n%s", diff)
			}
		})
	}
	wg.Wait()
	if got := calls.Load(); got != 1 {
		t.Errorf("containerd asked %d times within the TTL, want 1", got)
	}
	clk.Add(time.Minute)
	attest(t, a, c.PID)
	if got := calls.Load(); got != 2 {
		t.Errorf("containerd asked %d times after the TTL passed, want 2", got)
	}
}

func TestAttest_ContainerdDownFailsOnlyForContainers(t *testing.T) {
	f := newFixture(t)
	ref, _ := f.push(t, containerdtest.Image(t, f.sleeper, "/bin/sleeper", ""), "team/app:v1")
	c := f.d.Run(t, f.d.Pull(t, ref), randomID(t), containerdtest.RunOptions{})
	a := newAttestor(t, Config{ContainerdSocket: f.d.Dir + "/no-such.sock", LookupTimeout: time.Second})

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := a.Attest(ctx, c.PID); err == nil {
		t.Error("Attest of a container process with containerd unreachable succeeded, want an error")
	}
	if got := attest(t, a, int32(osGetpid())); len(got) != 0 {
		t.Errorf("a host process got %v, want no selectors", got)
	}
}

func TestAttest_Conformance(t *testing.T) {
	containerdtest.Require(t)
	d := containerdtest.Start(t)
	attestortest.RunWorkload(t, newAttestor(t, Config{ContainerdSocket: d.Socket}))
}

func TestAttest_ImagePinnedByDigest(t *testing.T) {
	f := newFixture(t)
	base := containerdtest.Image(t, f.sleeper, "/bin/sleeper", "")
	tagged, digest := f.push(t, base, "team/app:v1")
	// Same layers, another config: only the pinned digest tells them apart.
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Env = append(cf.Config.Env, "LD_PRELOAD=/evil.so")
	sibling, err := mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatal(err)
	}
	otherRef, _ := f.push(t, sibling, "team/app:sibling")
	pinned := strings.TrimSuffix(tagged, ":v1") + "@" + digest
	img := f.d.Pull(t, pinned)
	c := f.d.Run(t, img, randomID(t), containerdtest.RunOptions{})
	a := newAttestor(t, Config{ContainerdSocket: f.d.Socket, Namespace: containerdtest.Namespace, CacheTTL: time.Nanosecond})

	want := "container:image_digest:" + digest
	if got := attest(t, a, c.PID); !slices.Contains(got, want) {
		t.Fatalf("selectors %v lack %s", got, want)
	}
	// Point the digest-pinned name at another image's record: the name
	// now contradicts itself and its digest must not be believed.
	ctx := containerdtest.Context(t)
	other := f.d.Pull(t, otherRef)
	rec, err := f.d.Client().ImageService().Get(ctx, pinned)
	if err != nil {
		t.Fatal(err)
	}
	rec.Target = other.Target()
	if _, err := f.d.Client().ImageService().Update(ctx, rec, "target"); err != nil {
		t.Fatalf("re-point %s: %v", pinned, err)
	}
	for _, s := range attest(t, a, c.PID) {
		if strings.HasPrefix(s, "container:image_digest:") {
			t.Errorf("got %s for a digest-pinned name pointing elsewhere", s)
		}
	}
}
