package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/federation"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

func TestNew_ChecksTheFederationSettings(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), t.TempDir())
	cfg.Federation = FederationConfig{
		BundleEndpoint: BundleEndpointConfig{Address: "nowhere", Profile: federation.ProfileWeb, RefreshHint: time.Second},
		Relationships: []federation.Relationship{
			{TrustDomain: td, URL: "http://example.org/", Profile: federation.ProfileSPIFFE},
		},
	}
	_, err := New(cfg)
	for _, want := range []string{
		`Federation.BundleEndpoint.Address: "nowhere" is not host:port`,
		"Federation.BundleEndpoint.CertFile: CertFile and KeyFile are required with profile https_web",
		"Federation.BundleEndpoint.RefreshHint: 1s is outside 1m0s to 24h0m0s",
		`Federation.Relationships[0].TrustDomain: "example.org" is the server's own trust domain`,
		`Federation.Relationships[0].URL: scheme "http" is not https`,
		"Federation.Relationships[0].EndpointID: required with profile https_spiffe",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	cfg.Federation = FederationConfig{BundleEndpoint: BundleEndpointConfig{Address: "127.0.0.1:0"}}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p := srv.cfg.Federation.BundleEndpoint.Profile; p != federation.ProfileSPIFFE {
		t.Errorf("default profile %q, want https_spiffe", p)
	}
}

// TestFederation_TwoServersFederate runs two servers: example.org serves
// its bundle endpoint, partner.test bootstraps that bundle and refreshes
// it as its store-wide job.
func TestFederation_TwoServersFederate(t *testing.T) {
	base := t.TempDir()
	cfgA := testConfig(t, filepath.Join(base, "a"), filepath.Join(base, "sa"))
	cfgA.Federation.BundleEndpoint = BundleEndpointConfig{Address: "127.0.0.1:0", RefreshHint: time.Minute}
	a, _ := start(t, cfgA)
	if a.FederationAddr() == nil {
		t.Fatal("FederationAddr is nil on a ready server with a bundle endpoint")
	}
	adminA := adminConn(t, a)
	own, err := adminv1.NewBundleServiceClient(adminA).GetBundle(context.Background(), &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := filepath.Join(base, "example.org.json")
	if err := os.WriteFile(bootstrap, []byte(own.GetJwks()), 0o600); err != nil {
		t.Fatal(err)
	}

	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	cfgB := testConfig(t, filepath.Join(base, "b"), filepath.Join(base, "sb"))
	cfgB.TrustDomain = partner
	cfgB.Federation.Relationships = []federation.Relationship{{
		TrustDomain: td, URL: "https://" + a.FederationAddr().String() + "/", Profile: federation.ProfileSPIFFE,
		EndpointID: agentid.Server(td), BootstrapBundle: bootstrap,
	}}
	b, _ := start(t, cfgB)
	if b.FederationAddr() != nil {
		t.Error("FederationAddr without a bundle endpoint")
	}
	fedB := adminv1.NewFederationServiceClient(adminConn(t, b))
	var rel *adminv1.FederationRelationship
	deadline := time.Now().Add(waitTimeout)
	for rel.GetLastRefreshAt() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh within %v: %v", waitTimeout, rel)
		}
		time.Sleep(20 * time.Millisecond)
		resp, err := fedB.ListFederationRelationships(context.Background(), &adminv1.ListFederationRelationshipsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		rel = resp.GetRelationships()[0]
	}
	if rel.GetLastError() != "" || rel.GetNextRefreshAt() <= rel.GetLastRefreshAt() || rel.GetBundleSequence() == 0 ||
		rel.GetEndpointSpiffeId() != "spiffe://example.org/nhid/server" {
		t.Errorf("relationship after a refresh: %v", rel)
	}
	got, err := fedB.GetFederatedBundle(context.Background(), &adminv1.GetFederatedBundleRequest{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.GetBundle().GetX509Authorities()); n == 0 || n != len(own.GetBundle().GetX509Authorities()) || got.GetBundle().GetRefreshHint() != 60 {
		t.Errorf("partner.test holds %v, want example.org's authorities and the published hint", got.GetBundle())
	}
}

// TestFederation_OnlyTheLeaderRefreshes runs two example.org servers on
// one etcd store, both configured with a relationship to partner.test:
// the elected one fetches, the other reports no refresh of its own but
// the same stored bundle, and takes over when the leader stops.
func TestFederation_OnlyTheLeaderRefreshes(t *testing.T) {
	base := t.TempDir()
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	cfgP := testConfig(t, filepath.Join(base, "p"), filepath.Join(base, "sp"))
	cfgP.TrustDomain = partner
	cfgP.Federation.BundleEndpoint = BundleEndpointConfig{Address: "127.0.0.1:0"}
	p, _ := start(t, cfgP)
	own, err := adminv1.NewBundleServiceClient(adminConn(t, p)).GetBundle(context.Background(), &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := filepath.Join(base, "partner.test.json")
	if err := os.WriteFile(bootstrap, []byte(own.GetJwks()), 0o600); err != nil {
		t.Fatal(err)
	}

	m := etcdtest.Start(t, etcdtest.Options{})
	servers := make([]*Server, 2)
	stops := make([]func(), 2)
	clients := make([]adminv1.FederationServiceClient, 2)
	for i := range servers {
		cfg := etcdConfig(t, []string{m.ClientURL})
		cfg.Federation.Relationships = []federation.Relationship{{
			TrustDomain: partner, URL: "https://" + p.FederationAddr().String() + "/", Profile: federation.ProfileSPIFFE,
			EndpointID: agentid.Server(partner), BootstrapBundle: bootstrap,
		}}
		servers[i], stops[i] = start(t, cfg)
		clients[i] = adminv1.NewFederationServiceClient(adminConn(t, servers[i]))
	}
	status := func(i int) *adminv1.FederationRelationship {
		resp, err := clients[i].ListFederationRelationships(context.Background(), &adminv1.ListFederationRelationshipsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetRelationships()[0]
	}
	leader := -1
	eventually(t, "one server refreshed", func() bool {
		for i := range servers {
			if status(i).GetLastRefreshAt() != 0 {
				leader = i
				return true
			}
		}
		return false
	})
	other := 1 - leader
	if st := status(other); st.GetLastRefreshAt() != 0 || st.GetNextRefreshAt() != 0 || st.GetBundleSequence() != status(leader).GetBundleSequence() {
		t.Errorf("the non-leader reports %v; want no refresh of its own and the leader's %v", st, status(leader))
	}
	stops[leader]()
	eventually(t, "the other server takes over the refreshes", func() bool { return status(other).GetLastRefreshAt() != 0 })
}
