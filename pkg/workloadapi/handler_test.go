package workloadapi

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

func TestNew_RequiresManagerAndAttestor(t *testing.T) {
	mgr := newTestManager(t, newTestCA(t, "example.org"))
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no manager", Config{Attestor: &uidAttestor{}}, "Config.Manager is required"},
		{"no attestor", Config{Manager: mgr}, "Config.Attestor is required"},
		{"complete", Config{Manager: mgr, Attestor: &uidAttestor{}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || h == nil {
					t.Fatalf("New: %v, %v", h, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNew_SecondHandlerOnOneRegistrySharesItsMetrics(t *testing.T) {
	mgr := newTestManager(t, newTestCA(t, "example.org"))
	reg := prometheus.NewRegistry()
	for i := range 2 {
		if _, err := New(Config{Manager: mgr, Attestor: &uidAttestor{}, Metrics: reg}); err != nil {
			t.Fatalf("New #%d: %v", i+1, err)
		}
	}
}

func TestMetrics_CountRequestsStreamsAndSVIDs(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(
		env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()),
		env.mgr.identity("e2", "spiffe://example.org/api", "", selfSelector()),
	)
	m := env.srv.handler.metrics
	client := env.srv.client(t)

	ctx, cancel := context.WithCancel(withHeader(testContext(t)))
	defer cancel()
	stream, err := env.srv.rawClient(t).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if got := testutil.ToFloat64(m.streams.WithLabelValues(methodFetchX509SVID)); got != 1 {
		t.Errorf("active FetchX509SVID streams while one is open = %v, want 1", got)
	}
	cancel()
	if _, err := client.FetchJWTSVID(testContext(t), jwtsvid.Params{Audience: "db"}); err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if _, err := client.FetchJWTSVID(testContext(t), jwtsvid.Params{}); err == nil {
		t.Fatal("FetchJWTSVID without audience succeeded")
	}

	waitFor(t, "the cancelled stream to be counted", func() bool {
		return testutil.ToFloat64(m.requests.WithLabelValues(methodFetchX509SVID, "Canceled")) == 1
	})
	got := map[string]float64{
		"active FetchX509SVID streams": testutil.ToFloat64(m.streams.WithLabelValues(methodFetchX509SVID)),
		"FetchJWTSVID OK":              testutil.ToFloat64(m.requests.WithLabelValues(methodFetchJWTSVID, "OK")),
		"FetchJWTSVID InvalidArgument": testutil.ToFloat64(m.requests.WithLabelValues(methodFetchJWTSVID, "InvalidArgument")),
		"X.509-SVIDs served":           testutil.ToFloat64(m.svids.WithLabelValues(kindX509)),
		"JWT-SVIDs served":             testutil.ToFloat64(m.svids.WithLabelValues(kindJWT)),
		"first responses timed":        float64(testutil.CollectAndCount(m.firstResponse)),
	}
	want := map[string]float64{
		"active FetchX509SVID streams": 0,
		"FetchJWTSVID OK":              1,
		"FetchJWTSVID InvalidArgument": 1,
		"X.509-SVIDs served":           2,
		"JWT-SVIDs served":             2,
		"first responses timed":        2, // one series per method that responded
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	if n, err := testutil.GatherAndCount(env.srv.registry,
		"nhid_workloadapi_requests_total", "nhid_workloadapi_svids_served_total",
		"nhid_workloadapi_active_streams", "nhid_workloadapi_first_response_seconds"); err != nil || n == 0 {
		t.Errorf("registry has %d nhid_workloadapi_* series (%v), want some", n, err)
	}
}
