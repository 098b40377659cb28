package federation

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// These tests put go-spiffe's federation package, the reference client
// and handler SPIFFE implementations build on, at the other end of ours.

// TestInterop_GoSpiffeFetchesOurEndpointOverSPIFFEAuth: a partner using
// go-spiffe's FetchBundle with https_spiffe authentication reads our
// bundle endpoint and gets our authorities and refresh hint.
func TestInterop_GoSpiffeFetchesOurEndpointOverSPIFFEAuth(t *testing.T) {
	ours := openStore(t)
	ca := newTestCA(t, ownTD)
	storeAuthorities(t, ours, ownTD, ca)
	endpointID := spiffeid.RequireFromPath(ownTD, "/nhid/server")
	svid := ca.svid(t, endpointID)
	h, err := NewHandler(HandlerConfig{TrustDomain: ownTD, Bundles: ours, RefreshHint: 2 * time.Minute, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEndpoint(EndpointConfig{Handler: h, Profile: ProfileSPIFFE, Certificate: func() *tls.Certificate { return svid }})
	if err != nil {
		t.Fatal(err)
	}
	url := serveEndpoint(t, e)

	// The partner bootstrapped our CA out of band.
	trusted := x509bundle.FromX509Authorities(ownTD, []*x509.Certificate{ca.cert})
	got, err := federation.FetchBundle(testCtx(t), ownTD, url, federation.WithSPIFFEAuth(trusted, endpointID))
	if err != nil {
		t.Fatalf("go-spiffe FetchBundle: %v", err)
	}
	if auths := got.X509Authorities(); len(auths) != 1 || !auths[0].Equal(ca.cert) {
		t.Errorf("go-spiffe read authorities %v, want our CA", auths)
	}
	if hint, ok := got.RefreshHint(); !ok || hint != 2*time.Minute {
		t.Errorf("go-spiffe read refresh hint %v (%v), want 2m", hint, ok)
	}
	if _, ok := got.SequenceNumber(); !ok {
		t.Error("go-spiffe read no sequence number")
	}

	// Expecting another endpoint ID, go-spiffe refuses our SVID.
	other := spiffeid.RequireFromPath(ownTD, "/spire/server")
	if _, err := federation.FetchBundle(testCtx(t), ownTD, url, federation.WithSPIFFEAuth(trusted, other)); err == nil {
		t.Error("go-spiffe accepted our endpoint as another SPIFFE ID")
	}
}

// TestInterop_WeRefreshFromAGoSpiffeHandler: a partner serving its bundle
// with go-spiffe's federation handler (as SPIRE-based servers do) over
// https_spiffe; our refresher bootstraps its document, fetches, and
// follows its CA rotation.
func TestInterop_WeRefreshFromAGoSpiffeHandler(t *testing.T) {
	old, next := newTestCA(t, partnerTD), newTestCA(t, partnerTD)
	bundle := spiffebundle.New(partnerTD)
	bundle.AddX509Authority(old.cert)
	bundle.SetRefreshHint(3 * time.Minute)
	handler, err := federation.NewHandler(partnerTD, bundle)
	if err != nil {
		t.Fatal(err)
	}
	svid := old.svid(t, partnerID)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, TLSConfig: &tls.Config{Certificates: []tls.Certificate{*svid}}, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(lis, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	doc, err := bundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ours := openStore(t)
	r, err := NewRefresher(RefresherConfig{TrustDomain: ownTD, Store: ours, Relationships: []Relationship{{
		TrustDomain: partnerTD, URL: "https://" + lis.Addr().String() + "/", Profile: ProfileSPIFFE, EndpointID: partnerID,
		BootstrapBundle: writeFile(t, "partner.json", doc),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.seed(testCtx(t), r.rels[0]); err != nil {
		t.Fatal(err)
	}
	got, err := r.refresh(testCtx(t), r.rels[0])
	if err != nil {
		t.Fatalf("refresh from go-spiffe's handler: %v", err)
	}
	if !hasAuthorities(got, old) || got.GetRefreshHint() != 180 {
		t.Fatalf("stored %v, want the partner's CA and 180 s hint", got)
	}
	// The partner adds its next CA (the handler serves the live bundle);
	// the next fetch, still authenticated by the old CA, stores both.
	bundle.AddX509Authority(next.cert)
	got, err = r.refresh(testCtx(t), r.rels[0])
	if err != nil {
		t.Fatalf("refresh after the partner's rotation: %v", err)
	}
	if !hasAuthorities(got, old, next) {
		t.Fatalf("stored %v after the rotation, want both CAs", got)
	}
}
