package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// countingGetter is the real store, counting bundle reads.
type countingGetter struct {
	*bolt.Store
	reads atomic.Int32
}

func (c *countingGetter) GetBundle(ctx context.Context, td string) (*typesv1.Bundle, error) {
	c.reads.Add(1)
	return c.Store.GetBundle(ctx, td)
}

func storeAuthorities(t *testing.T, st *bolt.Store, td spiffeid.TrustDomain, cas ...*testCA) *typesv1.Bundle {
	t.Helper()
	b, err := st.UpdateBundle(testCtx(t), td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = nil
		for _, ca := range cas {
			b.X509Authorities = append(b.X509Authorities, &typesv1.X509Authority{Asn1: ca.cert.Raw})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serveEndpoint runs e on a loopback port until the test ends.
func serveEndpoint(t *testing.T, e *Endpoint) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "https://" + lis.Addr().String() + "/"
}

// TestEndpoint_PartnerFetchesOurBundleOverSPIFFEAuth runs both sides: our
// endpoint presenting the server's SVID, and a partner's refresher that
// bootstrapped our bundle document.
func TestEndpoint_PartnerFetchesOurBundleOverSPIFFEAuth(t *testing.T) {
	ours := openStore(t)
	ca := newTestCA(t, ownTD)
	own := storeAuthorities(t, ours, ownTD, ca)
	svid := ca.svid(t, spiffeid.RequireFromPath(ownTD, "/nhid/server"))
	h, err := NewHandler(HandlerConfig{TrustDomain: ownTD, Bundles: ours, RefreshHint: 90 * time.Second, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEndpoint(EndpointConfig{Handler: h, Profile: ProfileSPIFFE, Certificate: func() *tls.Certificate { return svid }})
	if err != nil {
		t.Fatal(err)
	}
	url := serveEndpoint(t, e)

	doc, err := h.Document(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	theirs := openStore(t)
	r, err := NewRefresher(RefresherConfig{TrustDomain: partnerTD, Store: theirs, Relationships: []Relationship{{
		TrustDomain: ownTD, URL: url, Profile: ProfileSPIFFE, EndpointID: spiffeid.RequireFromPath(ownTD, "/nhid/server"),
		BootstrapBundle: writeFile(t, "example.org.json", doc),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.refresh(testCtx(t), r.rels[0])
	if err != nil {
		t.Fatalf("partner refresh: %v", err)
	}
	if !hasAuthorities(got, ca) || got.GetRefreshHint() != 90 {
		t.Errorf("partner stored %v", got)
	}
	if !bytes.Contains(doc, []byte(`"spiffe_sequence":`)) || own.GetSequenceNumber() == 0 {
		t.Errorf("document lacks the sequence: %s", doc)
	}
}

func TestHandler_MethodsPathsAndHeaders(t *testing.T) {
	st := openStore(t)
	storeAuthorities(t, st, ownTD, newTestCA(t, ownTD))
	h, err := NewHandler(HandlerConfig{TrustDomain: ownTD, Bundles: st})
	if err != nil {
		t.Fatal(err)
	}
	svid := newTestCA(t, ownTD).svid(t, spiffeid.RequireFromPath(ownTD, "/nhid/server"))
	e, err := NewEndpoint(EndpointConfig{Handler: h, Certificate: func() *tls.Certificate { return svid }})
	if err != nil {
		t.Fatal(err)
	}
	url := serveEndpoint(t, e)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}} // #nosec G402 -- the test checks HTTP behaviour, not authentication
	for _, tt := range []struct {
		method, path string
		wantCode     int
		wantBody     bool
	}{
		{http.MethodGet, "", http.StatusOK, true},
		{http.MethodHead, "", http.StatusOK, false},
		{http.MethodPost, "", http.StatusMethodNotAllowed, false},
		{http.MethodGet, "other", http.StatusNotFound, false},
	} {
		req, _ := http.NewRequestWithContext(testCtx(t), tt.method, url+tt.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s /%s: %v", tt.method, tt.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tt.wantCode {
			t.Errorf("%s /%s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.wantCode)
		}
		if tt.wantCode == http.StatusOK {
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", tt.method, ct)
			}
			if tt.wantBody != bytes.Contains(body, []byte(`"x509-svid"`)) {
				t.Errorf("%s: body %q", tt.method, body)
			}
		}
		if tt.wantCode == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("405 without Allow: %v", resp.Header)
		}
	}
}

// TestEndpoint_TLSIsMozillaIntermediate: bundle endpoint servers of both
// profiles MUST adhere to Mozilla's intermediate compatibility (SPIFFE
// Federation section 5): TLS 1.2 and 1.3, and in TLS 1.2 only ECDHE
// key exchange with AEAD ciphers.
func TestEndpoint_TLSIsMozillaIntermediate(t *testing.T) {
	st := openStore(t)
	ca := newTestCA(t, ownTD)
	storeAuthorities(t, st, ownTD, ca)
	h, err := NewHandler(HandlerConfig{TrustDomain: ownTD, Bundles: st})
	if err != nil {
		t.Fatal(err)
	}
	svid := ca.svid(t, spiffeid.RequireFromPath(ownTD, "/nhid/server"))
	web := ca.webCert(t)
	key, err := x509.MarshalPKCS8PrivateKey(web.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile := writeFile(t, "tls.crt", pemOf(web.Leaf))
	keyFile := writeFile(t, "tls.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}))
	endpoints := map[Profile]EndpointConfig{
		ProfileSPIFFE: {Handler: h, Profile: ProfileSPIFFE, Certificate: func() *tls.Certificate { return svid }},
		ProfileWeb:    {Handler: h, Profile: ProfileWeb, CertFile: certFile, KeyFile: keyFile},
	}
	clients := []struct {
		name    string
		cfg     *tls.Config
		wantErr bool
	}{
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, false},
		{"TLS 1.2", &tls.Config{MaxVersion: tls.VersionTLS12}, false},
		{"TLS 1.2 AES-256-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}}, false},
		{"TLS 1.2 ChaCha20", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, false},
		{"TLS 1.2 CBC only", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, true},
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, true},
	}
	for profile, cfg := range endpoints {
		e, err := NewEndpoint(cfg)
		if err != nil {
			t.Fatal(err)
		}
		addr := strings.TrimSuffix(strings.TrimPrefix(serveEndpoint(t, e), "https://"), "/")
		for _, c := range clients {
			t.Run(string(profile)+"/"+c.name, func(t *testing.T) {
				c.cfg.InsecureSkipVerify = true // #nosec G402 -- the test checks protocol versions, not authentication
				conn, err := tls.Dial("tcp", addr, c.cfg)
				if c.wantErr {
					if err == nil {
						_ = conn.Close()
						t.Fatal("handshake succeeded, want it refused")
					}
					return
				}
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				_ = conn.Close()
			})
		}
	}
}

func TestHandler_CachesTheDocumentAndFollowsTheSequence(t *testing.T) {
	st := &countingGetter{Store: openStore(t)}
	ca1, ca2 := newTestCA(t, ownTD), newTestCA(t, ownTD)
	storeAuthorities(t, st.Store, ownTD, ca1)
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	h, err := NewHandler(HandlerConfig{TrustDomain: ownTD, Bundles: st, Clock: clk, CacheTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	first, err := h.Document(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if _, err := h.Document(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := st.reads.Load(); n != 1 {
		t.Errorf("51 documents cost %d store reads, want 1", n)
	}
	storeAuthorities(t, st.Store, ownTD, ca1, ca2)
	if doc, _ := h.Document(ctx); !bytes.Equal(doc, first) {
		t.Error("document changed before the cache TTL passed")
	}
	clk.Add(6 * time.Second)
	doc, err := h.Document(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(ownTD, doc)
	if err != nil || !hasAuthorities(b, ca1, ca2) {
		t.Errorf("after the TTL: %v, %v", b, err)
	}
}

func TestHandler_NoBundleYetIsUnavailable(t *testing.T) {
	h, err := NewHandler(HandlerConfig{TrustDomain: ownTD, Bundles: openStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Document(testCtx(t)); err == nil {
		t.Error("Document succeeded without a stored bundle")
	}
}

func TestKeyPair_ReloadsChangedFiles(t *testing.T) {
	ca := newTestCA(t, spiffeid.RequireTrustDomainFromString("web-pki.test"))
	write := func(cert *tls.Certificate, certFile, keyFile string) {
		t.Helper()
		der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		writeTo(t, certFile, pemOf(cert.Leaf))
		writeTo(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	first := ca.webCert(t)
	certFile, keyFile := writeFile(t, "tls.crt", nil), writeFile(t, "tls.key", nil)
	write(first, certFile, keyFile)
	kp, err := newKeyPair(certFile, keyFile, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	kp.checkEvery = 0
	second := ca.webCert(t)
	writeTo(t, keyFile, []byte("not a key")) // a half-written renewal keeps the old pair
	if got, _ := kp.get(nil); !bytes.Equal(got.Certificate[0], first.Leaf.Raw) {
		t.Fatal("a broken key file replaced the certificate")
	}
	write(second, certFile, keyFile)
	got, _ := kp.get(nil)
	if !bytes.Equal(got.Certificate[0], second.Leaf.Raw) {
		t.Error("the renewed certificate was not loaded")
	}
	if _, err := NewEndpoint(EndpointConfig{Handler: &Handler{}, Profile: ProfileWeb, CertFile: certFile}); err == nil {
		t.Error("https_web without key_file accepted")
	}
}
