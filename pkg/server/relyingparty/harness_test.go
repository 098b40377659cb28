package relyingparty

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/server/servertls"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	workload = spiffeid.RequireFromString("spiffe://example.org/ci/builder")
	rpID     = spiffeid.RequireFromString("spiffe://example.org/relying/party")
)

const agentID = "spiffe://example.org/nhid/agent/join_token/abc"

// harness is the relying-party endpoints over a real bolt store and CA,
// served on loopback with the server's real SVID.
type harness struct {
	t      testing.TB
	store  *bolt.Store
	ca     *ca.CA
	clock  *clock.Fake
	url    string
	bundle *x509bundle.Bundle
	// client is an HTTPS client presenting an X.509-SVID of the domain.
	client *http.Client
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newHarness(t testing.TB) *harness {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "nhid.db"), bolt.Options{Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	clk := clock.NewFake(time.Now())
	authority, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Dir: filepath.Join(dir, "ca"), Bundles: st, Log: discard(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	bundles := servertls.NewBundles(st, td, nil)
	src, err := servertls.New(servertls.Config{TrustDomain: td, Signer: authority, Bundles: bundles})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	rp, err := New(Config{TrustDomain: td, Bundles: bundles, Certificate: src.Certificate, Grants: st, Log: discard(), Clock: clk, MaxBodyBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, store: st, ca: authority, clock: clk}
	h.bundle = x509bundle.FromX509Authorities(td, authority.X509Authorities())
	h.serve(rp)
	h.client = h.httpClient(h.svid(authority, rpID))
	return h
}

func (h *harness) serve(rp *Server) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rp.Serve(ctx, lis) }()
	h.url = "https://" + lis.Addr().String()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Serve: %v", err)
		}
	})
}

// svid signs an X.509-SVID for id with a fresh key.
func (h *harness) svid(signer *ca.CA, id spiffeid.ID) *x509svid.SVID {
	h.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		h.t.Fatal(err)
	}
	chain, err := signer.SignX509SVID(context.Background(), ca.X509Params{ID: id, PublicKey: key.Public(), TTL: time.Hour})
	if err != nil {
		h.t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

// httpClient presents sv (none when nil) and authorises the server ID.
func (h *harness) httpClient(sv *x509svid.SVID) *http.Client {
	auth := tlsconfig.AuthorizeID(agentid.Server(td))
	cfg := tlsconfig.TLSClientConfig(h.bundle, auth)
	if sv != nil {
		cfg = tlsconfig.MTLSClientConfig(sv, h.bundle, auth)
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// introspect posts token and decodes the answer.
func (h *harness) introspect(c *http.Client, token string) (int, map[string]any) {
	h.t.Helper()
	resp, err := c.PostForm(h.url+PathIntrospect, url.Values{"token": {token}})
	if err != nil {
		h.t.Fatalf("POST %s: %v", PathIntrospect, err)
	}
	return decode(h.t, resp)
}

func decode(t testing.TB, resp *http.Response) (int, map[string]any) {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("answer %d is not JSON: %v\n%s", resp.StatusCode, err, body)
	}
	return resp.StatusCode, out
}

// grant stores an ACTIVE grant and signs its Txn-Token as pkg/grant does.
func (h *harness) grant(id string, ttl time.Duration) (*typesv1.Grant, string) {
	h.t.Helper()
	tok, iat, exp := h.sign(h.ca, id, workload, td.ID().String(), ttl)
	g, err := h.store.CreateGrant(context.Background(), &typesv1.Grant{
		Id: id, SpiffeId: workload.String(), EntryId: "entry-1", Node: agentID,
		Scopes: []string{"repo:read"}, Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE,
		CreatedAt: iat.Unix(), DecidedAt: iat.Unix(), ExpiresAt: exp.Unix(),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return g, tok
}

func (h *harness) sign(signer *ca.CA, txn string, sub spiffeid.ID, aud string, ttl time.Duration) (string, time.Time, time.Time) {
	h.t.Helper()
	tok, iat, exp, err := signer.SignTxnToken(context.Background(), ca.TxnParams{Subject: sub, TTL: ttl, Claims: map[string]any{
		"txn": txn, "jti": txn + "-token", "aud": aud, "iss": agentid.Server(td).String(), "scope": "repo:read", "req_wl": agentID,
		"tctx": map[string]any{"purpose": "builds releases", "reason": "release 1.2"},
		"rctx": map[string]any{"node": agentID},
	}})
	if err != nil {
		h.t.Fatal(err)
	}
	return tok, iat, exp
}

// setStatus ends a grant as pkg/grant would.
func (h *harness) setStatus(id string, st typesv1.GrantStatus) {
	h.t.Helper()
	_, err := h.store.UpdateGrant(context.Background(), id, func(g *typesv1.Grant) error {
		g.Status, g.EndedAt = st, h.clock.Now().Unix()
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

// wantTLSRefusal fails unless the request failed because the server
// refused the client certificate in the TLS handshake.
func wantTLSRefusal(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("request succeeded, want the TLS handshake to fail")
	}
	msg := err.Error()
	if !strings.Contains(msg, "tls: certificate required") && !strings.Contains(msg, "tls: bad certificate") {
		t.Fatalf("request failed with %v, want the server to refuse the client certificate", err)
	}
}
