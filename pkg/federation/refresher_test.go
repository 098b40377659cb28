package federation

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// fixture is a partner trust domain with a CA and a bundle endpoint, and
// our store and refresher for it.
type fixture struct {
	ca      *testCA
	partner *partner
	st      *bolt.Store
	reg     *prometheus.Registry
	r       *Refresher
	rel     *relState
}

// newSPIFFEFixture bootstraps an https_spiffe relationship with the
// partner's current bundle, as an operator would.
func newSPIFFEFixture(t *testing.T) *fixture {
	t.Helper()
	ca := newTestCA(t, partnerTD)
	doc := document(t, partnerTD, 10*time.Minute, ca)
	f := &fixture{ca: ca, partner: newPartner(t, ca.svid(t, partnerID), doc), st: openStore(t)}
	f.build(t, Relationship{
		TrustDomain: partnerTD, URL: f.partner.srv.URL + "/", Profile: ProfileSPIFFE, EndpointID: partnerID,
		BootstrapBundle: writeFile(t, "partner.json", doc),
	})
	return f
}

func (f *fixture) build(t *testing.T, rels ...Relationship) {
	t.Helper()
	f.reg = prometheus.NewRegistry()
	var err error
	f.r, err = NewRefresher(RefresherConfig{TrustDomain: ownTD, Relationships: rels, Store: f.st, Metrics: f.reg})
	if err != nil {
		t.Fatalf("NewRefresher: %v", err)
	}
	f.rel = f.r.rels[0]
}

func (f *fixture) refresh(t *testing.T) (*typesv1.Bundle, error) {
	t.Helper()
	return f.r.refresh(testCtx(t), f.rel)
}

func (f *fixture) mustRefresh(t *testing.T) *typesv1.Bundle {
	t.Helper()
	b, err := f.refresh(t)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	return b
}

func (f *fixture) stored(t *testing.T) *typesv1.Bundle {
	t.Helper()
	b, err := f.st.GetBundle(testCtx(t), partnerTD.Name())
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	return b
}

func (f *fixture) outcomes(outcome string) float64 {
	return testutil.ToFloat64(f.r.metrics.refreshes.WithLabelValues(partnerTD.Name(), outcome))
}

func authorities(b *typesv1.Bundle) [][]byte {
	var out [][]byte
	for _, a := range b.GetX509Authorities() {
		out = append(out, a.GetAsn1())
	}
	return out
}

func hasAuthorities(b *typesv1.Bundle, cas ...*testCA) bool {
	got := authorities(b)
	if len(got) != len(cas) {
		return false
	}
	for i, ca := range cas {
		if !bytes.Equal(got[i], ca.cert.Raw) {
			return false
		}
	}
	return true
}

func TestRefresh_GoodFetchIsStoredAndUnchangedOneIsNotWritten(t *testing.T) {
	f := newSPIFFEFixture(t)
	ctx := testCtx(t)
	if err := f.r.seed(ctx, f.rel); err != nil {
		t.Fatalf("seed: %v", err)
	}
	seeded := f.stored(t)
	if !hasAuthorities(seeded, f.ca) || seeded.GetRefreshHint() != 600 {
		t.Fatalf("bootstrap bundle not stored: %v", seeded)
	}

	rotated := newTestCA(t, partnerTD)
	f.partner.serve(document(t, partnerTD, 2*time.Minute, f.ca, rotated))
	got := f.mustRefresh(t)
	if !hasAuthorities(f.stored(t), f.ca, rotated) || got.GetSequenceNumber() != seeded.GetSequenceNumber()+1 || got.GetRefreshHint() != 120 {
		t.Fatalf("stored after refresh: %v", f.stored(t))
	}
	st := f.r.Status()[0]
	if st.LastRefresh.IsZero() || st.LastError != "" {
		t.Errorf("status after a good refresh: %+v", st)
	}

	rev, err := f.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events, err := f.st.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	again := f.mustRefresh(t)
	if again.GetSequenceNumber() != got.GetSequenceNumber() {
		t.Errorf("unchanged fetch moved the sequence from %d to %d", got.GetSequenceNumber(), again.GetSequenceNumber())
	}
	if rev2, _ := f.st.Revision(ctx); rev2 != rev {
		t.Errorf("unchanged fetch moved the store revision from %d to %d", rev, rev2)
	}
	select {
	case ev := <-events:
		t.Errorf("unchanged fetch woke a watcher: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
	if f.outcomes(outcomeUpdated) != 1 || f.outcomes(outcomeUnchanged) != 1 {
		t.Errorf("outcomes: updated %v, unchanged %v; want 1, 1", f.outcomes(outcomeUpdated), f.outcomes(outcomeUnchanged))
	}
	if n := testutil.ToFloat64(f.r.metrics.lastSuccess.WithLabelValues(partnerTD.Name())); n == 0 {
		t.Error("last success gauge not set")
	}
}

func TestRefresh_RefusedFetchesKeepThePreviousBundle(t *testing.T) {
	other := newTestCA(t, partnerTD) // a CA of partner.test we never learnt
	tests := []struct {
		name    string
		arrange func(t *testing.T, f *fixture)
		wantErr string
	}{
		{"garbage", func(t *testing.T, f *fixture) { f.partner.serve([]byte("<html>maintenance</html>")) }, "unable to parse JWKS"},
		{"no X.509 authority", func(t *testing.T, f *fixture) { f.partner.serve(document(t, partnerTD, 0)) }, "no X.509 authority"},
		{"another trust domain's bundle", func(t *testing.T, f *fixture) {
			f.partner.serve(document(t, partnerTD, 0, newTestCA(t, spiffeid.RequireTrustDomainFromString("evil.test"))))
		}, `not in trust domain "partner.test"`},
		{"oversized", func(t *testing.T, f *fixture) {
			f.partner.serve(append(bytes.Repeat([]byte(" "), MaxDocumentSize), document(t, partnerTD, 0, f.ca)...))
		}, "larger than"},
		{"wrong endpoint SPIFFE ID", func(t *testing.T, f *fixture) {
			f.partner.cert.Store(f.ca.svid(t, spiffeid.RequireFromPath(partnerTD, "/somebody/else")))
		}, "unexpected ID"},
		{"endpoint certificate not chaining to the stored bundle", func(t *testing.T, f *fixture) {
			f.partner.cert.Store(other.svid(t, partnerID))
			f.partner.serve(document(t, partnerTD, 0, other))
		}, "certificate signed by unknown authority"},
		{"Web PKI certificate on an https_spiffe endpoint", func(t *testing.T, f *fixture) {
			f.partner.cert.Store(f.ca.webCert(t))
		}, "certificate contains no URI SAN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSPIFFEFixture(t)
			f.mustRefresh(t)
			before := f.stored(t)
			good := f.r.Status()[0].LastRefresh
			tt.arrange(t, f)
			_, err := f.refresh(t)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("refresh error = %v, want one containing %q", err, tt.wantErr)
			}
			if after := f.stored(t); after.GetSequenceNumber() != before.GetSequenceNumber() || !hasAuthorities(after, f.ca) {
				t.Errorf("stored bundle changed after a refused fetch: %v", after)
			}
			st := f.r.Status()[0]
			if st.LastError == "" || !st.LastRefresh.Equal(good) {
				t.Errorf("status after a refused fetch: %+v", st)
			}
			if strings.Contains(st.LastError, f.partner.srv.URL) {
				t.Errorf("error repeats the URL: %s", st.LastError)
			}
			if f.outcomes(outcomeFailed) != 1 {
				t.Errorf("failed outcomes = %v, want 1", f.outcomes(outcomeFailed))
			}
		})
	}
}

func TestRefresh_RedirectToPlainHTTPAndErrorStatusAreRefused(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{}")) }))
	defer plain.Close()
	for _, tt := range []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
	}{
		{"redirect to http", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, plain.URL, http.StatusFound) },
			`redirect to scheme "http" refused`},
		{"server error", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) },
			"endpoint answered 503"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newSPIFFEFixture(t)
			f.mustRefresh(t)
			f.partner.srv.Config.Handler = tt.handler
			if _, err := f.refresh(t); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("refresh error = %v, want one containing %q", err, tt.wantErr)
			}
			if !hasAuthorities(f.stored(t), f.ca) {
				t.Error("stored bundle lost")
			}
		})
	}
}

// TestRefresh_RedirectWithUserinfoIsNotFollowed: a client follows a
// redirect only to a valid bundle endpoint URL (SPIFFE Federation sections
// 5.2.1.4 and 5.2.2.4), which has no userinfo (5.2.1.1, 5.2.2.1); and the
// refusal does not repeat the credentials.
func TestRefresh_RedirectWithUserinfoIsNotFollowed(t *testing.T) {
	f := newSPIFFEFixture(t)
	f.mustRefresh(t)
	rotated := newTestCA(t, partnerTD)
	doc := document(t, partnerTD, 10*time.Minute, rotated, f.ca)
	target := strings.Replace(f.partner.srv.URL, "https://", "https://user:s3cret@", 1) + "/moved"
	f.partner.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); ok {
			_, _ = w.Write(doc)
			return
		}
		http.Redirect(w, r, target, http.StatusFound)
	})
	_, err := f.refresh(t)
	if err == nil || !strings.Contains(err.Error(), "userinfo") {
		t.Fatalf("refresh error = %v, want the redirect refused for its userinfo", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error repeats the credentials: %v", err)
	}
	if !hasAuthorities(f.stored(t), f.ca) {
		t.Error("the stored bundle changed")
	}
}

func TestRefresh_FollowsThePartnersCARotation(t *testing.T) {
	f := newSPIFFEFixture(t)
	f.mustRefresh(t)
	// The partner prepares its next CA and publishes it beside the old one
	// while its endpoint still presents an SVID of the old one.
	next := newTestCA(t, partnerTD)
	f.partner.serve(document(t, partnerTD, 0, f.ca, next))
	f.mustRefresh(t)
	if !hasAuthorities(f.stored(t), f.ca, next) {
		t.Fatalf("stored after publication: %v", f.stored(t))
	}
	// It activates the next CA and drops the old one: its endpoint's SVID
	// now chains only to what the previous fetch taught us.
	f.partner.cert.Store(next.svid(t, partnerID))
	f.partner.serve(document(t, partnerTD, 0, next))
	f.mustRefresh(t)
	if !hasAuthorities(f.stored(t), next) {
		t.Fatalf("stored after activation: %v", f.stored(t))
	}
	f.mustRefresh(t) // and keeps authenticating on the new CA alone
}

func TestRefresh_WebProfileWithCAFile(t *testing.T) {
	webCA := newTestCA(t, spiffeid.RequireTrustDomainFromString("web-pki.test"))
	partnerCA := newTestCA(t, partnerTD)
	p := newPartner(t, webCA.webCert(t), document(t, partnerTD, 0, partnerCA))
	f := &fixture{ca: partnerCA, partner: p, st: openStore(t)}
	rel := Relationship{TrustDomain: partnerTD, URL: p.srv.URL, Profile: ProfileWeb}

	f.build(t, rel)
	if _, err := f.refresh(t); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("refresh without the private root: %v", err)
	}
	if _, err := f.st.GetBundle(testCtx(t), partnerTD.Name()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused fetch stored a bundle: %v", err)
	}

	rel.CAFile = writeFile(t, "roots.pem", pemOf(webCA.cert))
	f.build(t, rel)
	f.mustRefresh(t)
	if !hasAuthorities(f.stored(t), partnerCA) {
		t.Errorf("stored: %v", f.stored(t))
	}
}

func TestSeed_StoredBundleWins(t *testing.T) {
	f := newSPIFFEFixture(t)
	ctx := testCtx(t)
	byHand := newTestCA(t, partnerTD)
	if _, err := f.st.UpdateBundle(ctx, partnerTD.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: byHand.cert.Raw}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.r.seed(ctx, f.rel); err != nil {
		t.Fatal(err)
	}
	if !hasAuthorities(f.stored(t), byHand) {
		t.Errorf("bootstrap bundle replaced a stored one: %v", f.stored(t))
	}
}
