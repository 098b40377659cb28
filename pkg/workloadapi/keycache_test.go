package workloadapi

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKeyCache_EncodesPKCS8AndForgetsCollectedCertificates(t *testing.T) {
	c := newKeyCache()
	ca := newTestCA(t, "example.org")
	useCache(t, c, ca)

	// The SVID rotated out: nothing refers to its leaf any more.
	waitFor(t, "the cache to forget the collected certificate", func() bool {
		runtime.GC()
		return c.len() == 0
	})
}

// useCache encodes keys for a fresh SVID, whose leaf is unreachable once it
// returns.
func useCache(t *testing.T, c *keyCache, ca *testCA) {
	t.Helper()
	certs, key := ca.mintX509(t, "spiffe://example.org/web")
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := newKey(t)

	steps := []struct {
		name    string
		key     crypto.Signer
		wantLen int
	}{
		{"first use encodes and remembers", key, 1},
		{"second use is remembered", key, 1},
		{"another key for the same certificate is encoded anew", otherKey, 1},
		{"ed25519 keys are encoded but not remembered", edKey, 1},
	}
	for _, s := range steps {
		got, err := c.pkcs8(certs[0], s.key)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		want, err := x509.MarshalPKCS8PrivateKey(s.key)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: PKCS#8 (-want +got):\n%s", s.name, diff)
		}
		if got := c.len(); got != s.wantLen {
			t.Errorf("%s: cache entries = %d, want %d", s.name, got, s.wantLen)
		}
	}
}
