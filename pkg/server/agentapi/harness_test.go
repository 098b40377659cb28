package agentapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/attestors/jointoken"
	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/entry"
	tokenfmt "github.com/nhid/nhid/pkg/jointoken"
	"github.com/nhid/nhid/pkg/server/servertls"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// waitTimeout is how long tests wait for anything asynchronous.
const waitTimeout = 10 * time.Second

var td = spiffeid.RequireTrustDomainFromString("example.org")

// harness is a real agent API: bbolt store, CA, join-token and test
// verifiers, the server TLS source and a gRPC server on TCP loopback.
type harness struct {
	t      testing.TB
	store  store.Store
	ca     *ca.CA
	svc    *Service
	addr   string
	bundle *x509bundle.Bundle
}

// harnessSettings are what options change before the harness starts.
type harnessSettings struct {
	watchBuffer int
	config      func(*Config)
	// open, if set, opens the store instead of a bbolt file.
	open func(testing.TB) store.Store
}

type harnessOpt func(*harnessSettings)

// withWatchBuffer sets the store's per-watcher event buffer.
func withWatchBuffer(n int) harnessOpt {
	return func(s *harnessSettings) { s.watchBuffer = n }
}

// withStore runs the harness on the store open returns.
func withStore(open func(testing.TB) store.Store) harnessOpt {
	return func(s *harnessSettings) { s.open = open }
}

// withConfig adjusts the service configuration.
func withConfig(fn func(*Config)) harnessOpt {
	return func(s *harnessSettings) { s.config = fn }
}

func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	set := harnessSettings{watchBuffer: 1 << 16}
	for _, o := range opts {
		o(&set)
	}
	dir := t.TempDir()
	var st store.Store
	if set.open != nil {
		st = set.open(t)
	} else {
		b, err := bolt.Open(filepath.Join(dir, "nhid.db"), bolt.Options{WatchBuffer: set.watchBuffer, Log: discard()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		st = b
	}
	ctx := context.Background()
	authority, err := ca.New(ctx, ca.Config{TrustDomain: td, Dir: filepath.Join(dir, "ca"), Bundles: st, Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	jt, err := jointoken.NewVerifier(jointoken.VerifierConfig{TrustDomain: td, Tokens: st, Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{TrustDomain: td, Store: st, CA: authority, Verifiers: []attestor.NodeVerifier{jt, challengeVerifier{}}}
	if set.config != nil {
		set.config(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, store: st, ca: authority, svc: svc}
	h.bundle = x509bundle.FromX509Authorities(td, authority.X509Authorities())
	h.serve(ctx)
	return h
}

// serve starts the service's tracker, the TLS source and the gRPC server,
// all stopped at cleanup.
func (h *harness) serve(ctx context.Context) {
	t := h.t
	ctx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- h.svc.Run(ctx) }()
	select {
	case <-h.svc.tracker.subscribed:
	case <-time.After(waitTimeout):
		t.Fatal("change tracker did not subscribe")
	}
	src, err := servertls.New(servertls.Config{TrustDomain: td, Signer: h.ca, Bundles: servertls.NewBundles(h.store, td, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	unary, stream := h.svc.AuthInterceptors()
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(src.TLSConfig())),
		grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	h.svc.Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Service.Run: %v", err)
		}
	})
}

// dial connects with tlsCfg and returns an agent API client.
func (h *harness) dial(tlsCfg *tls.Config) agentv1.AgentServiceClient {
	h.t.Helper()
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return agentv1.NewAgentServiceClient(conn)
}

// anonymous is a client without a client certificate, as used for Attest.
func (h *harness) anonymous() agentv1.AgentServiceClient {
	return h.dial(tlsconfig.TLSClientConfig(h.bundle, tlsconfig.AuthorizeID(agentid.Server(td))))
}

// agent is an attested node as a test drives it.
type agent struct {
	id   spiffeid.ID
	svid *x509svid.SVID
	// client authenticates with svid.
	client agentv1.AgentServiceClient
}

// clientFor returns a client presenting svid as its client certificate.
func (h *harness) clientFor(svid *x509svid.SVID) agentv1.AgentServiceClient {
	return h.dial(tlsconfig.MTLSClientConfig(svid, h.bundle, tlsconfig.AuthorizeID(agentid.Server(td))))
}

// newToken stores a join token, optionally bound to a fixed agent ID.
func (h *harness) newToken(fixedID string) string {
	h.t.Helper()
	tok, err := tokenfmt.Generate()
	if err != nil {
		h.t.Fatal(err)
	}
	err = h.store.CreateJoinToken(context.Background(), &typesv1.JoinToken{
		Id: tok.ID, SecretHash: tok.SecretHash(), SpiffeId: fixedID,
		ExpiresAt: time.Now().Add(10 * time.Minute).Unix(), CreatedAt: time.Now().Unix(),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return tok.String()
}

// attestParams runs Attest with params, answering challenges with respond.
func (h *harness) attestParams(params *agentv1.AttestParams, respond func([]byte) []byte) (*agentv1.AttestResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := h.anonymous().Attest(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&agentv1.AttestRequest{Step: &agentv1.AttestRequest_Params{Params: params}}); err != nil {
		return nil, streamStatus(stream, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if res := resp.GetResult(); res != nil {
			return res, nil
		}
		answer := respond(resp.GetChallenge())
		msg := &agentv1.AttestRequest{Step: &agentv1.AttestRequest_ChallengeResponse{ChallengeResponse: answer}}
		if err := stream.Send(msg); err != nil {
			return nil, streamStatus(stream, err)
		}
	}
}

// streamStatus returns the call's real status when Send failed because the
// server had already ended the stream: gRPC's Send then says only io.EOF.
func streamStatus(stream agentv1.AgentService_AttestClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, recvErr := stream.Recv(); recvErr != nil {
		return recvErr
	}
	return err
}

// attest attests a node with a fresh join token.
func (h *harness) attest() *agent {
	h.t.Helper()
	return h.attestWith(jointoken.Type, []byte(h.newToken("")), nil)
}

// attestWithSelectors attests a node through the test verifier, which
// gives it these node selectors.
func (h *harness) attestWithSelectors(nodeID string, sels ...string) *agent {
	h.t.Helper()
	return h.attestWith(challengeType, challengePayload(nodeID, 1, sels...), answerChallenge)
}

func (h *harness) attestWith(typ string, payload []byte, respond func([]byte) []byte) *agent {
	h.t.Helper()
	key := newKey(h.t)
	res, err := h.attestParams(&agentv1.AttestParams{Attestor: typ, Payload: payload, Csr: newCSR(h.t, key, "")}, respond)
	if err != nil {
		h.t.Fatalf("Attest: %v", err)
	}
	sv := svidFrom(h.t, res.GetSvidChain(), key)
	return &agent{id: sv.ID, svid: sv, client: h.clientFor(sv)}
}

// createEntries stores entries and returns the stored copies.
func (h *harness) createEntries(entries ...*typesv1.Entry) []*typesv1.Entry {
	h.t.Helper()
	for _, e := range entries {
		entry.Normalize(e)
	}
	created, errs, err := h.store.CreateEntries(context.Background(), entries)
	if err != nil {
		h.t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			h.t.Fatalf("create entry %d: %v", i, err)
		}
	}
	return created
}

// setNodeStatus changes a node's status as an operator would.
func (h *harness) setNodeStatus(id spiffeid.ID, st typesv1.NodeStatus) {
	h.t.Helper()
	_, err := h.store.UpdateNode(context.Background(), id.String(), func(n *typesv1.Node) error {
		n.Status = st
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// newCSR makes a CSR for key; uri, if set, is put in it as a URI SAN the
// server must ignore.
func newCSR(t testing.TB, key crypto.Signer, uri string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
		tmpl.DNSNames = []string{"evil.example.com"}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// svidFrom parses a chain the server returned, checking it verifies
// against the bundle.
func svidFrom(t testing.TB, chain [][]byte, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	var raw []byte
	for _, c := range chain {
		raw = append(raw, c...)
	}
	sv, err := x509svid.ParseRaw(raw, mustPKCS8(t, key))
	if err != nil {
		t.Fatalf("parse SVID: %v", err)
	}
	return sv
}

func mustPKCS8(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// wantCode fails the test unless err has the code and its message contains msg.
func wantCode(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("error = %v (%s), want %s containing %q", err, st.Code(), code, msg)
	}
}
