package workloadapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	unixattestor "github.com/nhid/nhid/attestors/unix"
	"github.com/nhid/nhid/pkg/selector"
)

// unixAttestor adapts the real unix workload attestor, as the agent does
// with its list of attestors, to this package's Attestor.
type unixAttestor struct {
	a *unixattestor.Attestor
}

func (u unixAttestor) Attest(ctx context.Context, pid int32) (selector.Set, error) {
	sels, err := u.a.Attest(ctx, pid)
	if err != nil {
		return selector.Set{}, err
	}
	return selector.NewSet(sels...), nil
}

func TestFetchX509Context_WithTheUnixAttestorMatchesUIDAndBinaryHash(t *testing.T) {
	a, err := unixattestor.New(unixattestor.Config{Log: discardLog()})
	if err != nil {
		t.Fatalf("unix attestor: %v", err)
	}
	self := fmt.Sprintf("unix:sha256:%s", sha256OfFile(t, "/proc/self/exe"))
	ca := newTestCA(t, "example.org")
	mgr := newTestManager(t, ca)
	mgr.setIdentities(
		mgr.identity("e1", "spiffe://example.org/this-binary", "", selfSelector(), self),
		mgr.identity("e2", "spiffe://example.org/other-binary", "", selfSelector(), "unix:sha256:"+hex.EncodeToString(make([]byte, 32))),
		mgr.identity("e3", "spiffe://example.org/other-user", "", "unix:uid:424242", self),
	)
	ts := startServer(t, serverOptions{manager: mgr, attestor: unixAttestor{a}})

	got, err := ts.client(t).FetchX509Context(testContext(t))
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}
	var ids []string
	for _, s := range got.SVIDs {
		ids = append(ids, s.ID.String())
	}
	if diff := cmp.Diff([]string{"spiffe://example.org/this-binary"}, ids); diff != "" {
		t.Errorf("SVIDs (-want +got):\n%s", diff)
	}
}

func sha256OfFile(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
