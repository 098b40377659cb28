package adminapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// testCA issues X.509-SVIDs of testTD, and verifies them as the server's
// bundle would: go-spiffe's x509svid.Verify against the CA certificate.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newKey makes a P-256 key.
func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// signCert signs tmpl for key's public half with parent and parentKey
// (tmpl and key themselves for a self-signed certificate).
func signCert(t *testing.T, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{testTD.ID().URL()},
	}
	return &testCA{cert: signCert(t, tmpl, tmpl, key, key), key: key}
}

func (ca *testCA) issue(t *testing.T, id string, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:        []*url.URL{spiffeid.RequireFromString(id).URL()},
	}
	return signCert(t, tmpl, ca.cert, newKey(t), ca.key)
}

func (ca *testCA) VerifyX509SVID(_ context.Context, certs []*x509.Certificate) (spiffeid.ID, error) {
	id, _, err := x509svid.Verify(certs, x509bundle.FromX509Authorities(testTD, []*x509.Certificate{ca.cert}))
	return id, err
}

// flakyEntries fails every read while down.
type flakyEntries struct {
	AdminEntryLister
	down bool
}

func (f *flakyEntries) ListEntries(ctx context.Context, req store.ListEntriesRequest) ([]*typesv1.Entry, string, error) {
	if f.down {
		return nil, "", errors.New("store unreachable")
	}
	return f.AdminEntryLister.ListEntries(ctx, req)
}

// tlsPeer is the context of a call over TLS whose client presented certs.
func tlsPeer(certs ...*x509.Certificate) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: certs}},
	})
}

func TestAuthorizeSVID_AdminEntriesAndTheAllowListGetInAndAreNamedBySPIFFEID(t *testing.T) {
	ca := newTestCA(t)
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now()
	_, errs, err := st.CreateEntries(context.Background(), []*typesv1.Entry{
		{SpiffeId: "spiffe://example.org/ops/alice", ParentId: "spiffe://example.org/nhid/agent/x", Selectors: []string{"unix:uid:1"}, Admin: true},
		{SpiffeId: "spiffe://example.org/ops/bob", ParentId: "spiffe://example.org/nhid/agent/x", Selectors: []string{"unix:uid:2"}},
		// Two entries of one ID: one admin is enough.
		{SpiffeId: "spiffe://example.org/ops/bob", ParentId: "spiffe://example.org/nhid/agent/y", Selectors: []string{"unix:uid:2"}, Admin: true,
			ExpiresAt: now.Add(-time.Minute).Unix()},
		{SpiffeId: "spiffe://example.org/ops/carol", ParentId: "spiffe://example.org/nhid/agent/x", Selectors: []string{"unix:uid:3"}},
		{SpiffeId: "spiffe://example.org/ops/carol", ParentId: "spiffe://example.org/nhid/agent/y", Selectors: []string{"unix:uid:3"}, Admin: true,
			ExpiresAt: now.Add(time.Hour).Unix()},
	})
	if err := errors.Join(append(errs, err)...); err != nil {
		t.Fatal(err)
	}
	entries := &flakyEntries{AdminEntryLister: st}
	unary, _ := AuthorizeSVID(SVIDAuthConfig{
		Verifier: ca, Entries: entries, Clock: clock.NewFake(now),
		AllowedIDs: []spiffeid.ID{spiffeid.RequireFromString("spiffe://example.org/ops/root")},
	})
	call := func(ctx context.Context) (string, error) {
		out, err := unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/test/Call"}, func(ctx context.Context, _ any) (any, error) {
			return callerName(ctx), nil
		})
		s, _ := out.(string)
		return s, err
	}
	valid := func(id string) context.Context { return tlsPeer(ca.issue(t, id, now.Add(time.Hour))) }

	for _, id := range []string{"spiffe://example.org/ops/alice", "spiffe://example.org/ops/root", "spiffe://example.org/ops/carol"} {
		if got, err := call(valid(id)); err != nil || got != id {
			t.Errorf("call by %s = %q, %v; want it let in and named by its SPIFFE ID", id, got, err)
		}
	}
	refused := []struct {
		name string
		ctx  context.Context
		code codes.Code
	}{
		{"an entry without the admin flag (the admin one expired)", valid("spiffe://example.org/ops/bob"), codes.PermissionDenied},
		{"no entry at all", valid("spiffe://example.org/ops/mallory"), codes.PermissionDenied},
		{"no TLS", context.Background(), codes.Unauthenticated},
		{"no client certificate", tlsPeer(), codes.Unauthenticated},
		{"an expired SVID", tlsPeer(ca.issue(t, "spiffe://example.org/ops/alice", now.Add(-time.Second))), codes.Unauthenticated},
		{"an SVID of another CA", tlsPeer(newTestCA(t).issue(t, "spiffe://example.org/ops/alice", now.Add(time.Hour))), codes.Unauthenticated},
	}
	for _, tt := range refused {
		if _, err := call(tt.ctx); status.Code(err) != tt.code {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.code)
		}
	}
	entries.down = true
	if _, err := call(valid("spiffe://example.org/ops/alice")); status.Code(err) != codes.Unavailable {
		t.Errorf("with the store down: %v, want Unavailable", err)
	}
	// The allow-list needs no store.
	if _, err := call(valid("spiffe://example.org/ops/root")); err != nil {
		t.Errorf("allow-listed ID with the store down: %v", err)
	}
}

// fakeStream is a server stream whose context is the call's.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func TestAuthorizeSVID_StreamsAndRolesFollowTheSameRule(t *testing.T) {
	ca := newTestCA(t)
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	auditor := spiffeid.RequireFromString("spiffe://example.org/ops/auditor")
	pattern, err := ParseIDPattern("spiffe://example.org/ops/auditor", testTD)
	if err != nil {
		t.Fatal(err)
	}
	unary, stream := AuthorizeSVID(SVIDAuthConfig{
		Verifier: ca, Entries: st, AllowedIDs: []spiffeid.ID{auditor},
		Roles: []Role{{Name: "auditors", IDs: []IDPattern{pattern}, Permissions: []Permission{PermRead}}},
	})
	ctx := tlsPeer(ca.issue(t, auditor.String(), time.Now().Add(time.Hour)))

	// A stream (audit tail) is a read: let in, with the caller named.
	var named string
	err = stream(nil, &fakeStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: "/nhid.admin.v1.AuditService/ListAuditRecords", IsServerStream: true},
		func(_ any, ss grpc.ServerStream) error {
			named = callerName(ss.Context())
			return nil
		})
	if err != nil || named != auditor.String() {
		t.Fatalf("auditor's audit stream = %v, caller %q", err, named)
	}
	// A write, unary or stream, is refused by the role with the reason.
	_, err = unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/nhid.admin.v1.EntryService/DeleteEntry"},
		func(context.Context, any) (any, error) { t.Fatal("handler ran"); return nil, nil })
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "has role auditors (read); /nhid.admin.v1.EntryService/DeleteEntry needs write") {
		t.Errorf("auditor's DeleteEntry: %v", err)
	}
	_, err = unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/nhid.admin.v1.ApprovalService/Approve"},
		func(context.Context, any) (any, error) { t.Fatal("handler ran"); return nil, nil })
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("auditor's Approve: %v, want PermissionDenied", err)
	}
	// A stream without a client certificate never reaches its handler.
	err = stream(nil, &fakeStream{ctx: tlsPeer()}, &grpc.StreamServerInfo{FullMethod: "/nhid.admin.v1.AuditService/ListAuditRecords"},
		func(any, grpc.ServerStream) error { t.Fatal("handler ran"); return nil })
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("stream without a certificate: %v, want Unauthenticated", err)
	}
}
