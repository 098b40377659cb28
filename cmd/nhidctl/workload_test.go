package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nhid/nhid/pkg/svid"
)

// workloadServer stands in for nhid-agent's Workload API (a separate
// component) on a real Unix socket, with real certificates and JWTs.
type workloadServer struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	socket string
	ca     *x509.Certificate
	leaf   *x509.Certificate
	resp   *workload.X509SVIDResponse
	jwtKey *ecdsa.PrivateKey
	deny   bool
}

const workloadID = "spiffe://example.org/billing"

func (w *workloadServer) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if w.deny {
		return status.Error(codes.PermissionDenied, "no identity issued")
	}
	if err := stream.Send(w.resp); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// ValidateJWTSVID checks the signature and audience as the agent would.
func (w *workloadServer) ValidateJWTSVID(_ context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	tok, err := jwt.ParseSigned(req.GetSvid(), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "malformed token: %v", err)
	}
	var claims jwt.Claims
	var all map[string]any
	if err := tok.Claims(&w.jwtKey.PublicKey, &claims, &all); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad signature: %v", err)
	}
	if !slices.Contains(claims.Audience, req.GetAudience()) {
		return nil, status.Errorf(codes.InvalidArgument, "audience %q not in token", req.GetAudience())
	}
	st, err := structpb.NewStruct(all)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: claims.Subject, Claims: st}, nil
}

func newWorkloadServer(t *testing.T) *workloadServer {
	t.Helper()
	w := &workloadServer{socket: filepath.Join(shortTempDir(t), "agent.sock")}
	caKey := newKey(t)
	w.ca = newCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"},
		URIs: []*url.URL{{Scheme: "spiffe", Host: "example.org"}}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}, nil, caKey, caKey)
	leafKey := newKey(t)
	purpose, err := svid.PurposeExtension(svid.Purpose{EntryID: "entry-1", Purpose: "reconciles invoices", Owner: "ana@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	w.leaf = newCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(0xabc123), URIs: []*url.URL{{Scheme: "spiffe", Host: "example.org", Path: "/billing"}},
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{purpose},
	}, w.ca, leafKey, caKey)
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	w.resp = &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId: workloadID, X509Svid: w.leaf.Raw, X509SvidKey: keyDER, Bundle: w.ca.Raw, Hint: "internal",
	}}}
	w.jwtKey = newKey(t)

	lis, err := net.Listen("unix", w.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, w)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return w
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCert(t *testing.T, tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// jwtFor signs a JWT-SVID for the workload with the server's key.
func (w *workloadServer) jwtFor(t *testing.T, audience string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: w.jwtKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Subject: workloadID, Audience: jwt.Audience{audience},
		Expiry: jwt.NewNumericDate(time.Now().Add(5 * time.Minute)),
	}).Claims(map[string]any{"purpose": "reconciles invoices"}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
