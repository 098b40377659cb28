package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// etcdConfig is a server config on the shared etcd store.
func etcdConfig(t testing.TB, endpoints []string) Config {
	t.Helper()
	cfg := testConfig(t, filepath.Join(t.TempDir(), "data"), t.TempDir())
	cfg.Store = StoreConfig{Kind: StoreEtcd, Etcd: etcd.Config{
		Endpoints: endpoints, Prefix: "/ha-test/", LeaseTTL: 2 * time.Second,
	}}
	return cfg
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServers_SharingEtcdServeOneTrustDomain(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.Options{})
	a, _ := start(t, etcdConfig(t, []string{m.ClientURL}))
	b, _ := start(t, etcdConfig(t, []string{m.ClientURL}))
	adminA, adminB := adminConn(t, a), adminConn(t, b)
	ctx := context.Background()

	// Each server publishes its own CA; the shared bundle holds both.
	eventually(t, "both CAs in the bundle", func() bool { return len(bundleOf(t, adminA).X509Authorities()) == 2 })
	bundleB := bundleOf(t, adminB)
	if len(bundleB.X509Authorities()) != 2 {
		t.Fatalf("server B serves %d authorities, want both servers'", len(bundleB.X509Authorities()))
	}

	// A token from A attests through B; B's CA signs, A's bundle verifies.
	tok, err := adminv1.NewJoinTokenServiceClient(adminA).GenerateToken(ctx, &adminv1.GenerateTokenRequest{})
	if err != nil {
		t.Fatalf("GenerateToken: %v", err)
	}
	serverID := tlsconfig.AuthorizeID(agentid.Server(td))
	sv := attest(t, agentv1.NewAgentServiceClient(agentConn(t, b, tlsconfig.TLSClientConfig(bundleB, serverID))), tok.GetToken(), newKey(t))
	if _, _, err := x509svid.Verify(sv.Certificates, bundleOf(t, adminA)); err != nil {
		t.Fatalf("an SVID issued by B does not verify with A's bundle: %v", err)
	}

	// The token is spent for every server.
	anonA := agentv1.NewAgentServiceClient(agentConn(t, a, tlsconfig.TLSClientConfig(bundleOf(t, adminA), serverID)))
	if err := attestErr(t, anonA, tok.GetToken()); status.Code(err) != codes.PermissionDenied {
		t.Errorf("second use of the token through A: %v, want PermissionDenied", err)
	}

	// An entry created through A reaches the agent syncing through B.
	created, err := adminv1.NewEntryServiceClient(adminA).CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &typesv1.Entry{
		SpiffeId: "spiffe://example.org/web", ParentId: sv.ID.String(), Selectors: []string{"unix:uid:1000"},
	}})
	if err != nil {
		t.Fatalf("CreateEntry: %v", err)
	}
	syncB := agentv1.NewAgentServiceClient(agentConn(t, b, tlsconfig.MTLSClientConfig(sv, bundleB, serverID)))
	sctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	stream, err := syncB.Sync(sctx, &agentv1.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatalf("Sync through B: %v", err)
	}
	if len(msg.GetUpserts()) != 1 || msg.GetUpserts()[0].GetId() != created.GetEntry().GetId() {
		t.Errorf("Sync through B sent %v, want the entry created through A", msg.GetUpserts())
	}
}

// attestErr attests with token and returns the error, if any.
func attestErr(t *testing.T, client agentv1.AgentServiceClient, token string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := client.Attest(ctx)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	params := &agentv1.AttestParams{Attestor: "join_token", Payload: []byte(token), Csr: csr}
	if err := stream.Send(&agentv1.AttestRequest{Step: &agentv1.AttestRequest_Params{Params: params}}); err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

func TestServers_SharingEtcdElectOneMaintenanceLeader(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.Options{})
	servers := make([]*Server, 2)
	stops := make([]func(), 2)
	for i := range servers {
		servers[i], stops[i] = start(t, etcdConfig(t, []string{m.ClientURL}))
	}
	leaders := func() []int {
		var out []int
		for i, s := range servers {
			if stops[i] != nil && leaderGauge(t, s) == 1 {
				out = append(out, i)
			}
		}
		return out
	}
	var leader []int
	eventually(t, "one leader", func() bool { leader = leaders(); return len(leader) == 1 })
	stops[leader[0]]()
	stops[leader[0]] = nil
	other := 1 - leader[0]
	eventually(t, "the other server takes over", func() bool { return leaderGauge(t, servers[other]) == 1 })
}

// leaderGauge reads nhid_server_maintenance_leader from /metrics.
func leaderGauge(t *testing.T, s *Server) int {
	t.Helper()
	resp, err := http.Get("http://" + s.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		var v int
		if _, err := fmt.Sscanf(line, "nhid_server_maintenance_leader %d", &v); err == nil {
			return v
		}
	}
	return 0
}

// BenchmarkCrossServerPush measures how long an entry created through
// server A takes to reach an agent's Sync stream on server B, both on one
// etcd member (fsyncing):
//
//	go test -run '^$' -bench CrossServerPush -benchtime 200x ./pkg/server/
func BenchmarkCrossServerPush(b *testing.B) {
	m := etcdtest.Start(b, etcdtest.Options{Fsync: true})
	cfgA, cfgB := etcdConfig(b, []string{m.ClientURL}), etcdConfig(b, []string{m.ClientURL})
	a, _ := start(b, cfgA)
	srvB, _ := start(b, cfgB)
	adminA, adminB := adminConn(b, a), adminConn(b, srvB)
	ctx := context.Background()
	eventually(b, "both CAs in the bundle", func() bool { return len(bundleOf(b, adminB).X509Authorities()) == 2 })
	tok, err := adminv1.NewJoinTokenServiceClient(adminA).GenerateToken(ctx, &adminv1.GenerateTokenRequest{})
	if err != nil {
		b.Fatal(err)
	}
	bundleB := bundleOf(b, adminB)
	serverID := tlsconfig.AuthorizeID(agentid.Server(td))
	sv := attest(b, agentv1.NewAgentServiceClient(agentConn(b, srvB, tlsconfig.TLSClientConfig(bundleB, serverID))), tok.GetToken(), newKey(b))
	syncB := agentv1.NewAgentServiceClient(agentConn(b, srvB, tlsconfig.MTLSClientConfig(sv, bundleB, serverID)))
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := syncB.Sync(sctx, &agentv1.SyncRequest{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		b.Fatal(err)
	}
	entries := adminv1.NewEntryServiceClient(adminA)
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		_, err := entries.CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &typesv1.Entry{
			SpiffeId: fmt.Sprintf("spiffe://example.org/push/%d", i), ParentId: sv.ID.String(), Selectors: []string{"unix:uid:1000"},
		}})
		if err != nil {
			b.Fatal(err)
		}
		for {
			msg, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if len(msg.GetUpserts()) > 0 {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
