package server

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// caCert is a self-signed CA certificate valid until notAfter.
func caCert(t *testing.T, notAfter time.Time) []byte {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestAuthorityPruner_RemovesEveryServersExpiredAuthoritiesOnly(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "nhid.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	live, dead := caCert(t, now.Add(time.Hour)), caCert(t, now.Add(-time.Hour))
	ctx := t.Context()
	_, err = st.UpdateBundle(ctx, td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: dead}, {Asn1: live}}
		b.JwtAuthorities = []*typesv1.JWTAuthority{
			{KeyId: "old", ExpiresAt: now.Add(-time.Minute).Unix()},
			{KeyId: "new", ExpiresAt: now.Add(time.Hour).Unix()},
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p := newAuthorityPruner(Config{TrustDomain: td, Clock: clock.NewFake(now), MaintenanceEvery: time.Minute}, st, slog.New(slog.DiscardHandler))
	if err := p.prune(ctx); err != nil {
		t.Fatalf("prune: %v", err)
	}
	got, err := st.GetBundle(ctx, td.Name())
	if err != nil {
		t.Fatal(err)
	}
	want := &typesv1.Bundle{
		TrustDomain:     td.Name(),
		X509Authorities: []*typesv1.X509Authority{{Asn1: live}},
		JwtAuthorities:  []*typesv1.JWTAuthority{{KeyId: "new", ExpiresAt: now.Add(time.Hour).Unix()}},
		SequenceNumber:  2,
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("bundle after pruning (-want +got):\n%s", diff)
	}
	if err := p.prune(ctx); err != nil {
		t.Fatalf("second prune: %v", err)
	}
	if again, _ := st.GetBundle(ctx, td.Name()); again.GetSequenceNumber() != 2 {
		t.Errorf("a prune with nothing to remove moved the sequence number to %d", again.GetSequenceNumber())
	}
}

func TestConfig_StoreSettingsAreChecked(t *testing.T) {
	tests := []struct {
		name  string
		store StoreConfig
		want  string
	}{
		{"unknown kind", StoreConfig{Kind: "consul"}, `Store.Kind: "consul" is neither bolt nor etcd`},
		{"etcd without endpoints", StoreConfig{Kind: StoreEtcd}, "Store.Etcd.Endpoints: required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), t.TempDir())
			cfg.Store = tc.store
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}
