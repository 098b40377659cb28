package servertls

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

type fixture struct {
	store *bolt.Store
	ca    *ca.CA
	src   *Source
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "nhid.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	authority, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Dir: filepath.Join(dir, "ca"), Bundles: st})
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(Config{TrustDomain: td, Signer: authority, Bundles: NewBundles(st, td, nil)})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{store: st, ca: authority, src: src}
}

func (f *fixture) svid(t *testing.T, id string) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sid := spiffeid.RequireFromString(id)
	chain, err := f.ca.SignX509SVID(context.Background(), ca.X509Params{ID: sid, PublicKey: key.Public(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: sid, Certificates: chain, PrivateKey: crypto.Signer(key)}
}

func TestSource_RotateIssuesAFreshServerSVIDEachTime(t *testing.T) {
	f := newFixture(t)
	if f.src.Certificate() != nil {
		t.Fatal("certificate before the first Rotate")
	}
	ctx := context.Background()
	if err := f.src.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	first := f.src.Certificate()
	id, err := x509svid.IDFromCert(first.Leaf)
	if err != nil || id != agentid.Server(td) {
		t.Fatalf("server SVID ID = %v, %v; want %s", id, err, agentid.Server(td))
	}
	if err := f.src.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	second := f.src.Certificate()
	if first.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) == 0 ||
		first.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(second.Leaf.PublicKey) {
		t.Error("Rotate reused the serial or the key")
	}
}

// handshake runs a TLS handshake over loopback TCP between the source's
// config and a client, returning the server's error, else the client's.
func handshake(t *testing.T, f *fixture, client *tls.Config) error {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	errc := make(chan error, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			errc <- err
			return
		}
		srv := tls.Server(conn, f.src.TLSConfig())
		errc <- srv.Handshake()
		_ = srv.Close()
	}()
	conn, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cli := tls.Client(conn, client)
	cerr := cli.Handshake()
	if cerr == nil {
		// In TLS 1.3 the client learns of a refused certificate on its
		// first read.
		_, cerr = cli.Read(make([]byte, 1))
		if errors.Is(cerr, io.EOF) {
			cerr = nil
		}
	}
	_ = cli.Close()
	if serr := <-errc; serr != nil {
		return serr
	}
	return cerr
}

func TestSource_TLSConfigVerifiesClientsAgainstTheCurrentBundle(t *testing.T) {
	f := newFixture(t)
	if err := f.src.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(td, f.ca.X509Authorities())
	authz := tlsconfig.AuthorizeID(agentid.Server(td))
	stranger := newFixture(t)
	tests := []struct {
		name    string
		client  *tls.Config
		wantErr string
	}{
		{"no client certificate", tlsconfig.TLSClientConfig(bundle, authz), ""},
		{"client SVID of the trust domain", tlsconfig.MTLSClientConfig(f.svid(t, "spiffe://example.org/nhid/agent/x/1"), bundle, authz), ""},
		{"client SVID of another CA", tlsconfig.MTLSClientConfig(stranger.svid(t, "spiffe://example.org/nhid/agent/x/2"), bundle, authz),
			"client certificate: verify X.509-SVID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := handshake(t, f, tt.client)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("handshake error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestBundles_FollowTheStoredBundle(t *testing.T) {
	f := newFixture(t)
	b := NewBundles(f.store, td, nil)
	ctx := context.Background()
	agent := f.svid(t, "spiffe://example.org/nhid/agent/x/1")
	if id, err := b.VerifyX509SVID(ctx, agent.Certificates); err != nil || id != agent.ID {
		t.Fatalf("VerifyX509SVID = %v, %v", id, err)
	}
	// Removing the authorities from the stored bundle revokes trust at once.
	_, err := f.store.UpdateBundle(ctx, td.Name(), func(pb *typesv1.Bundle) error {
		pb.X509Authorities = nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.VerifyX509SVID(ctx, agent.Certificates); err == nil {
		t.Fatal("VerifyX509SVID succeeded against an emptied bundle")
	}
	if _, err := b.VerifyX509SVID(ctx, nil); err == nil || !strings.Contains(err.Error(), "no certificate presented") {
		t.Errorf("VerifyX509SVID(nil) = %v", err)
	}
	other := NewBundles(f.store, spiffeid.RequireTrustDomainFromString("other.org"), nil)
	pb, xb, err := other.Current(ctx)
	if err != nil || pb.GetTrustDomain() != "other.org" || len(xb.X509Authorities()) != 0 {
		t.Errorf("Current of an unknown trust domain = %v, %v, %v; want an empty bundle", pb, xb, err)
	}
}

func TestNew_ReportsEveryConfigProblem(t *testing.T) {
	_, err := New(Config{KeyType: "dsa", TTL: time.Second})
	if err == nil {
		t.Fatal("New succeeded")
	}
	for _, want := range []string{"TrustDomain: required", "Signer: required", "Bundles: required", `KeyType: key type "dsa"`, "TTL: 1s is shorter than 1m"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
