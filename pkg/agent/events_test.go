package agent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agent"
	"github.com/nhid/nhid/pkg/selector"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// serverEvents reads how many workload events of kind the server has
// recorded, from its nhid_agentapi_workload_events_total.
func serverEvents(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "nhid_agentapi_workload_events_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if label(m, "kind") == kind && label(m, "outcome") == "recorded" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// waitServerEvents waits until the server has recorded at least n events
// of kind.
func waitServerEvents(t *testing.T, reg *prometheus.Registry, kind string, n float64) {
	t.Helper()
	deadline := time.Now().Add(3 * waitTimeout)
	for serverEvents(t, reg, kind) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the server recorded %v %s events within %s, want %v", serverEvents(t, reg, kind), kind, 3*waitTimeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// meteredServer runs a server whose metrics the test reads.
func meteredServer(t *testing.T, dataDir, bind string) (*testServer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := serverConfig(t, dataDir)
	cfg.Metrics = reg
	if bind != "" {
		cfg.BindAddress = bind
	}
	return runServer(t, cfg), reg
}

// trustingConfig is an agent config with the server's bundle.
func trustingConfig(t *testing.T, srv *testServer, token string) agent.Config {
	t.Helper()
	cfg := agentConfig(t, srv, t.TempDir(), token)
	cfg.TrustBundleFile = srv.bundleFile(t)
	return cfg
}

func wantDenied(t *testing.T, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("error = %v, want PermissionDenied", err)
	}
}

func TestWorkloadEvents_ACallerAskingForAnIdentityItDoesNotHoldIsReported(t *testing.T) {
	srv, reg := meteredServer(t, t.TempDir(), "")
	token, agentID := srv.token(t)
	srv.createEntry(t, agentID, "workload/held")
	a := startAgent(t, trustingConfig(t, srv, token))
	fetchX509(t, a.Agent) // the caller holds workload/held

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	client, err := workloadapi.New(ctx, socketAddr(a.Agent))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_, err = client.FetchJWTSVID(ctx, jwtsvid.Params{
		Audience: "https://api.example.org", Subject: spiffeid.RequireFromString("spiffe://example.org/workload/other"),
	})
	wantDenied(t, err)
	waitServerEvents(t, reg, "not_entitled", 1)
}

// failingAttestor is a workload attestor that cannot attest anyone.
type failingAttestor struct{}

func (failingAttestor) Attest(context.Context, int32) (selector.Set, error) {
	return selector.Set{}, errors.New("cannot read the process")
}

func TestWorkloadEvents_AWorkloadAttestationFailureIsReported(t *testing.T) {
	srv, reg := meteredServer(t, t.TempDir(), "")
	token, _ := srv.token(t)
	cfg := trustingConfig(t, srv, token)
	cfg.WorkloadAttestor = failingAttestor{}
	a := startAgent(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := workloadapi.FetchX509SVID(ctx, socketAddr(a.Agent))
	wantDenied(t, err)
	waitServerEvents(t, reg, "attestation_failed", 1)
	if got := serverEvents(t, reg, "not_entitled"); got != 0 {
		t.Errorf("%v not_entitled events for a caller whose attestation failed, want 0: it is reported once", got)
	}
}

func TestWorkloadEvents_AreKeptWhileTheServerIsDownAndSentWhenItIsBack(t *testing.T) {
	dataDir := t.TempDir()
	srv, _ := meteredServer(t, dataDir, "")
	addr := srv.srv.Addr().String()
	token, _ := srv.token(t)
	a := startAgent(t, trustingConfig(t, srv, token))
	srv.stop()

	// The caller holds nothing: refused while the server is away.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := workloadapi.FetchX509SVID(ctx, socketAddr(a.Agent))
	wantDenied(t, err)
	time.Sleep(1500 * time.Millisecond) // at least one flush fails meanwhile

	_, reg := meteredServer(t, dataDir, addr)
	waitServerEvents(t, reg, "not_entitled", 1)
}

func TestWorkloadEvents_AGrantAPIRefusalIsReported(t *testing.T) {
	srv, reg := meteredServer(t, t.TempDir(), "")
	token, agentID := srv.token(t)
	srv.createEntry(t, agentID, "workload/held")
	a := startAgent(t, trustingConfig(t, srv, token))
	fetchX509(t, a.Agent)
	client, ctx := grantsClient(t, a.Agent)
	_, err := client.List(ctx, &grantv1.ListRequest{SpiffeId: "spiffe://example.org/workload/other"})
	wantDenied(t, err)
	waitServerEvents(t, reg, "not_entitled", 1)
}
