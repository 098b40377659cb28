package sigstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
)

func TestNew_RejectsBadConfig(t *testing.T) {
	key := sigstoretest.NewKey(t)
	root := sigstoretest.NewSigstore(t).TrustedRoot(t)
	id := sigstore.Identity{Subject: "ci@example.com", Issuer: "https://issuer.example.com"}
	tests := []struct {
		name    string
		cfg     sigstore.Config
		wantErr string
	}{
		{"nothing to verify with", sigstore.Config{}, "configure public keys, a trusted root, or both"},
		{"key without a name", sigstore.Config{PublicKeys: []sigstore.PublicKey{{PEM: key.PEM}}}, "PublicKeys[0].Name"},
		{"key name with a colon", sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "a:b", PEM: key.PEM}}}, "PublicKeys[0].Name"},
		{"duplicate key names", sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: key.PEM}, {Name: "k", PEM: key.PEM}}}, "used twice"},
		{"key that is not PEM", sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: []byte("not a key")}}}, "PublicKeys[0] (k)"},
		{"identities without a trusted root", sigstore.Config{Identities: []sigstore.Identity{id}}, "need a TrustedRoot"},
		{"trusted root without identities", sigstore.Config{TrustedRoot: root}, "at least one accepted signer identity"},
		{"trusted root that is not JSON", sigstore.Config{TrustedRoot: []byte("{"), Identities: []sigstore.Identity{id}}, "TrustedRoot"},
		{"identity without an issuer", sigstore.Config{TrustedRoot: root, Identities: []sigstore.Identity{{Subject: "a"}}}, "Identities[0]"},
		{"identity with subject and regexp", sigstore.Config{TrustedRoot: root, Identities: []sigstore.Identity{{Subject: "a", SubjectRegexp: "a", Issuer: "i"}}}, "Identities[0]"},
		{"identity with a bad regexp", sigstore.Config{TrustedRoot: root, Identities: []sigstore.Identity{{SubjectRegexp: "(", Issuer: "i"}}}, "Identities[0]"},
		{"negative cache TTL", sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}, CacheTTL: -1}, "CacheTTL"},
		{"bad insecure registry", sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}, InsecureRegistries: []string{"http://r"}}, "InsecureRegistries[0]"},
		{"missing OCI layout", sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}, OCILayout: "/nonexistent/layout"}, "OCILayout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sigstore.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSelectors_RejectsReferencesWithoutDigest(t *testing.T) {
	key := sigstoretest.NewKey(t)
	v := newVerifier(t, sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}})
	for _, ref := range []string{
		"",
		"registry.example.com/app:1.0",
		"registry.example.com/app",
		"docker-pullable://registry.example.com/app@sha256:" + strings.Repeat("a", 64),
		"registry.example.com/app@sha256:abc",
		"registry.example.com/app@md5:" + strings.Repeat("a", 32),
		"Registry.example.com/UPPER@sha256:" + strings.Repeat("a", 64),
	} {
		t.Run(ref, func(t *testing.T) {
			if sels, err := v.Selectors(context.Background(), ref); err == nil {
				t.Errorf("Selectors(%q) = %v, nil; want an error", ref, sels)
			}
		})
	}
}
