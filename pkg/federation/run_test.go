package federation

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRun_SeedsRefreshesOnTheHintAndRetriesFailures(t *testing.T) {
	f := newSPIFFEFixture(t)
	f.r.minInterval, f.r.minBackoff, f.r.maxBackoff = 0, 10*time.Millisecond, 20*time.Millisecond
	f.partner.serve(document(t, partnerTD, time.Second, f.ca))
	if st := f.r.Status()[0]; !st.NextRefresh.IsZero() {
		t.Fatalf("next refresh before Run: %v", st.NextRefresh)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.r.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	eventually(t, "two fetches a hint apart", func() bool { return f.partner.hits.Load() >= 2 })
	if st := f.r.Status()[0]; st.NextRefresh.IsZero() || st.LastRefresh.IsZero() || st.LastError != "" {
		t.Errorf("status while running: %+v", st)
	}
	// The partner breaks: retries come on the backoff, not the hint.
	f.partner.serve([]byte("garbage"))
	hits := f.partner.hits.Load()
	eventually(t, "retries after failures", func() bool { return f.partner.hits.Load() >= hits+3 })
	if st := f.r.Status()[0]; !strings.Contains(st.LastError, "unable to parse JWKS") {
		t.Errorf("status after failures: %+v", st)
	}
	if !hasAuthorities(f.stored(t), f.ca) {
		t.Error("failures lost the stored bundle")
	}
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if st := f.r.Status()[0]; !st.NextRefresh.IsZero() {
		t.Errorf("next refresh after Run returned: %v (a server that does not lead reports none)", st.NextRefresh)
	}
}

func TestNewRefresher_ReportsEveryProblem(t *testing.T) {
	ca := newTestCA(t, partnerTD)
	goodDoc := writeFile(t, "good.json", document(t, partnerTD, 0, ca))
	other := spiffeid.RequireTrustDomainFromString("other.test")
	_, err := NewRefresher(RefresherConfig{TrustDomain: ownTD, Store: openStore(t), Relationships: []Relationship{
		{TrustDomain: partnerTD, URL: "https://partner.test/bundle", Profile: ProfileSPIFFE, EndpointID: partnerID, BootstrapBundle: goodDoc},
		{TrustDomain: partnerTD, URL: "http://partner.test/", Profile: ProfileSPIFFE},
		{TrustDomain: ownTD, URL: "https://x.test/", Profile: ProfileWeb, EndpointID: partnerID},
		{TrustDomain: other, URL: "https://o.test/", Profile: ProfileSPIFFE, EndpointID: partnerID, CAFile: "/x"},
		{TrustDomain: spiffeid.RequireTrustDomainFromString("p4.test"), URL: "https://p4.test/", Profile: "https"},
		{TrustDomain: spiffeid.RequireTrustDomainFromString("p5.test"), URL: "https://p5.test/", Profile: ProfileWeb,
			BootstrapBundle: goodDoc, CAFile: writeFile(t, "roots.pem", []byte("not pem"))},
	}})
	if err == nil {
		t.Fatal("NewRefresher accepted bad relationships")
	}
	for _, want := range []string{
		`Relationships[1].TrustDomain: "partner.test" already has Relationships[0]`,
		`Relationships[1].URL: scheme "http" is not https`,
		"Relationships[1].EndpointID: required with profile https_spiffe",
		`Relationships[2].TrustDomain: "example.org" is the server's own trust domain`,
		"Relationships[2].EndpointID: only used with profile https_spiffe",
		`Relationships[3].EndpointID: "spiffe://partner.test/nhid/server" is not in trust domain "other.test"`,
		"Relationships[3].CAFile: only used with profile https_web",
		`Relationships[4].Profile: "https" is not https_spiffe or https_web`,
		"Relationships[5].CAFile: ",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "Relationships[0]:") || strings.Contains(err.Error(), "Relationships[0].") {
		t.Errorf("error blames the good relationship:\n%v", err)
	}
	_, err = NewRefresher(RefresherConfig{TrustDomain: ownTD, Store: openStore(t), Relationships: []Relationship{
		{TrustDomain: other, URL: "https://o.test/", Profile: ProfileWeb, BootstrapBundle: goodDoc},
	}})
	if err == nil || !strings.Contains(err.Error(), `is not in trust domain "other.test"`) {
		t.Errorf("a bootstrap bundle of another trust domain: %v", err)
	}
}
