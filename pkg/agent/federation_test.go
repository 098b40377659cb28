package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/agent/internal/agenttest"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/bolt"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var partnerTD = spiffeid.RequireTrustDomainFromString("partner.test")

// setPartnerBundle stores a partner.test bundle on the server through the
// admin FederationService and returns the partner's CA.
func (s *testServer) setPartnerBundle(t *testing.T) *agenttest.CA {
	t.Helper()
	ca := agenttest.NewCA(t, partnerTD, clock.Real())
	b := spiffebundle.New(partnerTD)
	b.AddX509Authority(ca.Cert)
	if err := b.AddJWTAuthority("test-jwt", ca.JWTKey.Public()); err != nil {
		t.Fatal(err)
	}
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	_, err = adminv1.NewFederationServiceClient(s.admin).SetFederatedBundle(context.Background(),
		&adminv1.SetFederatedBundleRequest{TrustDomain: partnerTD.Name(), Bundle: doc})
	if err != nil {
		t.Fatalf("SetFederatedBundle: %v", err)
	}
	return ca
}

func (s *testServer) deletePartnerBundle(t *testing.T) {
	t.Helper()
	if _, err := adminv1.NewFederationServiceClient(s.admin).DeleteFederatedBundle(context.Background(),
		&adminv1.DeleteFederatedBundleRequest{TrustDomain: partnerTD.Name()}); err != nil {
		t.Fatalf("DeleteFederatedBundle: %v", err)
	}
}

// createFederatingEntry registers an entry for this test process that
// federates with the given trust domains.
func (s *testServer) createFederatingEntry(t *testing.T, parent, path string, tds ...string) *typesv1.Entry {
	t.Helper()
	resp, err := s.entries().CreateEntry(context.Background(), &adminv1.CreateEntryRequest{Entry: &typesv1.Entry{
		SpiffeId:      "spiffe://example.org/" + path,
		ParentId:      parent,
		Selectors:     []string{fmt.Sprintf("unix:uid:%d", os.Getuid())},
		FederatesWith: tds,
	}})
	if err != nil {
		t.Fatalf("CreateEntry: %v", err)
	}
	return resp.GetEntry()
}

// waitPartner waits for an X.509 context that has an SVID and holds
// partner.test's bundle with ca's certificate (ca non-nil) or no bundle
// of partner.test (ca nil).
func waitPartner(t *testing.T, ch <-chan *workloadapi.X509Context, ca *agenttest.CA) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case c := <-ch:
			b, ok := c.Bundles.Get(partnerTD)
			switch {
			case len(c.SVIDs) == 0:
			case ca == nil && !ok:
				return
			case ca != nil && ok && b.HasX509Authority(ca.Cert):
				return
			}
		case <-deadline:
			t.Fatalf("no X.509 context with partner.test's bundle present=%v within 10s", ca != nil)
		}
	}
}

func validatePartnerJWT(t *testing.T, a *testAgent, ca *agenttest.CA) error {
	t.Helper()
	token, _, _, err := ca.SignJWT("spiffe://partner.test/caller", []string{"https://api.example.org"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	client, err := workloadapi.New(ctx, socketAddr(a.Agent))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_, err = client.ValidateJWTSVID(ctx, token, "https://api.example.org")
	return err
}

func TestAgent_FederatedBundleSetAndDeletedLiveReachesAnOpenStream(t *testing.T) {
	srv := startServer(t, t.TempDir())
	token, agentID := srv.token(t)
	srv.createFederatingEntry(t, agentID, "workload/fed", partnerTD.Name())
	cfg := agentConfig(t, srv, t.TempDir(), token)
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)
	ch := watch(t, a.Agent)
	waitPartner(t, ch, nil)

	partner := srv.setPartnerBundle(t)
	waitPartner(t, ch, partner)
	if err := validatePartnerJWT(t, a, partner); err != nil {
		t.Errorf("ValidateJWTSVID of a partner.test JWT-SVID: %v", err)
	}
	srv.deletePartnerBundle(t)
	waitPartner(t, ch, nil)
}

// editStore changes the stopped server's bbolt store, for federated
// bundles without the admin FederationService.
func editStore(t *testing.T, dataDir string, fn func(ctx context.Context, st *bolt.Store) error) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(dataDir, "nhid.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := fn(context.Background(), st); err != nil {
		t.Fatal(err)
	}
}

func TestAgent_FederatedBundlesFollowTheServerStoreAndSurviveARestart(t *testing.T) {
	dataDir := t.TempDir()
	srv := startServer(t, dataDir)
	addr := srv.srv.Addr().String()
	token, agentID := srv.token(t)
	e := srv.createFederatingEntry(t, agentID, "workload/fed", partnerTD.Name())
	e.Revision = 0 // written back whole later
	srv.stop()
	partner := agenttest.NewCA(t, partnerTD, clock.Real())
	editStore(t, dataDir, func(ctx context.Context, st *bolt.Store) error {
		_, err := st.UpdateBundle(ctx, partnerTD.Name(), func(b *typesv1.Bundle) error {
			pb := partner.Bundle()
			b.X509Authorities, b.JwtAuthorities = pb.X509Authorities, pb.JwtAuthorities
			return nil
		})
		return err
	})

	restart := func() *testServer {
		cfg := serverConfig(t, dataDir)
		cfg.BindAddress = addr
		return runServer(t, cfg)
	}
	srv = restart()
	cfg := agentConfig(t, srv, t.TempDir(), token)
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)
	ch := watch(t, a.Agent)
	waitPartner(t, ch, partner)
	if err := validatePartnerJWT(t, a, partner); err != nil {
		t.Errorf("ValidateJWTSVID of a partner.test JWT-SVID for a federating workload: %v", err)
	}

	// The entry stops federating: the bundle is withdrawn, and so is trust
	// in the partner's JWT-SVIDs.
	alone := proto.Clone(e).(*typesv1.Entry)
	alone.FederatesWith = nil
	if _, err := srv.entries().UpdateEntry(context.Background(), &adminv1.UpdateEntryRequest{Entry: alone}); err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	waitPartner(t, ch, nil)
	if err := validatePartnerJWT(t, a, partner); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID of a partner.test JWT-SVID for a workload not federating = %v, want InvalidArgument", err)
	}
	if _, err := srv.entries().UpdateEntry(context.Background(), &adminv1.UpdateEntryRequest{Entry: e}); err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	waitPartner(t, ch, partner)

	// Restarted while the server is down, the agent serves the cached set.
	if err := a.stop(); err != nil {
		t.Fatalf("agent Run: %v", err)
	}
	srv.stop()
	a2 := startAgent(t, cfg)
	ch = watch(t, a2.Agent)
	waitPartner(t, ch, partner)

	// The bundle deleted, the server's next Sync stream withdraws it.
	editStore(t, dataDir, func(ctx context.Context, st *bolt.Store) error {
		return st.DeleteBundle(ctx, partnerTD.Name())
	})
	restart()
	waitPartner(t, ch, nil)
}
