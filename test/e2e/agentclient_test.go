package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

var serverID = spiffeid.RequireFromString("spiffe://" + trustDomain + "/nhid/server")

// agentClient speaks the agent API the way nhid-agent does, so the server
// can be tested on its own: attest with a join token, then call the API with
// the agent SVID over mTLS.
type agentClient struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
	conn   *grpc.ClientConn
	api    agentv1.AgentServiceClient
}

func loadBundle(t testing.TB, s *server) *x509bundle.Bundle {
	t.Helper()
	b, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString(trustDomain), s.bundlePEM(t))
	if err != nil {
		t.Fatalf("load the server's bundle: %v", err)
	}
	return b
}

func newCSR(t testing.TB, uri string) (crypto.Signer, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "e2e"}}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// attest runs the Attest stream with a join token over server-authenticated TLS.
func attest(ctx context.Context, t testing.TB, s *server, token string) (*agentClient, error) {
	t.Helper()
	bundle := loadBundle(t, s)
	conn, err := grpc.NewClient(s.addr(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(serverID)))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, csr := newCSR(t, "")
	stream, err := agentv1.NewAgentServiceClient(conn).Attest(ctx)
	if err != nil {
		return nil, err
	}
	params := &agentv1.AttestParams{Attestor: "join_token", Payload: []byte(token), Csr: csr}
	if err := stream.Send(&agentv1.AttestRequest{Step: &agentv1.AttestRequest_Params{Params: params}}); err != nil {
		// A server that refused before reading ends the stream; Send then
		// says only io.EOF and the status comes from Recv.
		if _, recvErr := stream.Recv(); recvErr != nil {
			return nil, recvErr
		}
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	result := resp.GetResult()
	if result == nil {
		return nil, fmt.Errorf("join-token attestation answered with a challenge: %v", resp)
	}
	certs, err := parseChain(result.GetSvidChain())
	if err != nil {
		return nil, err
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, fmt.Errorf("agent SVID: %w", err)
	}
	c := &agentClient{svid: &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, bundle: bundle}
	c.conn, err = grpc.NewClient(s.addr(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(c.svid, bundle, tlsconfig.AuthorizeID(serverID)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	c.api = agentv1.NewAgentServiceClient(c.conn)
	return c, nil
}

func parseChain(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, fmt.Errorf("empty certificate chain")
	}
	certs := make([]*x509.Certificate, 0, len(ders))
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// syncStream follows one Sync stream and keeps the entries it holds.
type syncStream struct {
	stream   agentv1.AgentService_SyncClient
	revision int64
}

// recvUntil reads messages until cond holds for the latest one.
func (s *syncStream) recvUntil(t *testing.T, what string, cond func(*agentv1.SyncResponse) bool) *agentv1.SyncResponse {
	t.Helper()
	type recv struct {
		msg *agentv1.SyncResponse
		err error
	}
	deadline := time.After(waitTimeout)
	for {
		ch := make(chan recv, 1)
		go func() {
			m, err := s.stream.Recv()
			ch <- recv{m, err}
		}()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("waiting for %s: sync stream: %v", what, r.err)
			}
			if r.msg.GetRevision() != 0 {
				s.revision = r.msg.GetRevision()
			}
			if cond(r.msg) {
				return r.msg
			}
		case <-deadline:
			t.Fatalf("waiting for %s: nothing within %s", what, waitTimeout)
		}
	}
}

func verifySVID(t *testing.T, certs []*x509.Certificate, bundle *x509bundle.Bundle) spiffeid.ID {
	t.Helper()
	id, _, err := x509svid.Verify(certs, bundle)
	if err != nil {
		t.Fatalf("SVID does not verify against the bundle: %v", err)
	}
	return id
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
