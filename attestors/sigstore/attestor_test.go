package sigstore_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/attestors/container/containerdtest"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/selector"
)

var (
	sleeperOnce sync.Once
	sleeperDir  string
	sleeperPath string
)

// sleeper builds the static sleeper binary once for the whole test run.
func sleeper(t *testing.T) string {
	t.Helper()
	return sleeperTB(t)
}

func sleeperTB(t testing.TB) string {
	t.Helper()
	sleeperOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nhid-sigstore-test-")
		if err != nil {
			t.Fatal(err)
		}
		sleeperDir = dir
		sleeperPath = containerdtest.BuildStatic(tempDirTB{TB: t, dir: dir}, "./attestors/container/containerdtest/sleeper")
	})
	if sleeperPath == "" {
		t.Fatal("building the sleeper failed earlier")
	}
	return sleeperPath
}

// tempDirTB hands BuildStatic a directory that outlives one test.
type tempDirTB struct {
	testing.TB
	dir string
}

func (d tempDirTB) TempDir() string { return d.dir }

func newContainerAttestor(t *testing.T, d *containerdtest.Daemon) *container.Attestor {
	t.Helper()
	a, err := container.New(container.Config{ContainerdSocket: d.Socket, Namespace: containerdtest.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func TestAttest_SignedContainerImage(t *testing.T) {
	d := containerdtest.Start(t)
	reg := sigstoretest.StartRegistry(t)
	key := sigstoretest.NewKey(t)
	signed := sigstoretest.Push(t, reg.Host+"/team/app:signed", containerdtest.Image(t, sleeper(t), "/bin/sleeper", "signed"))
	sigstoretest.Sign(t, signed, key)
	unsigned := sigstoretest.Push(t, reg.Host+"/team/app:unsigned", containerdtest.Image(t, sleeper(t), "/bin/sleeper", "unsigned"))

	signedC := d.Run(t, d.Pull(t, reg.Host+"/team/app:signed"), randomID(t), containerdtest.RunOptions{})
	unsignedC := d.Run(t, d.Pull(t, reg.Host+"/team/app:unsigned"), randomID(t), containerdtest.RunOptions{})
	v := newVerifier(t, sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "release", PEM: key.PEM}}})
	a, err := sigstore.NewAttestor(sigstore.AttestorConfig{Verifier: v, Images: newContainerAttestor(t, d)})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		pid  int32
		want []string
	}{
		{"container of a signed image", signedC.PID, []string{"sigstore:signed_by:release", "sigstore:verified:true"}},
		{"container of an unsigned image", unsignedC.PID, nil},
		{"host process", int32(os.Getpid()), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			sels, err := a.Attest(ctx, tt.pid)
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if diff := cmp.Diff(tt.want, selector.NewSet(sels...).Strings()); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
		})
	}
	if signed.DigestStr() == unsigned.DigestStr() {
		t.Fatal("the two images have one digest")
	}
	attestortest.RunWorkload(t, a)
}

func TestNewAttestor_NeedsVerifierAndImages(t *testing.T) {
	_, err := sigstore.NewAttestor(sigstore.AttestorConfig{})
	if err == nil || !strings.Contains(err.Error(), "Verifier") || !strings.Contains(err.Error(), "Images") {
		t.Errorf("err = %v, want one naming Verifier and Images", err)
	}
}
