package manager

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nhid/nhid/pkg/agent/internal/agenttest"
	"github.com/nhid/nhid/pkg/agent/trust"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/store/agentcache"
	"github.com/nhid/nhid/pkg/workloadapi"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var (
	td      = spiffeid.RequireTrustDomainFromString("example.org")
	agentID = "spiffe://example.org/nhid/agent/join_token/0123456789abcdef01234567"
	epoch   = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// fixture is a manager wired to a fake agent API and a real cache.
type fixture struct {
	m     *Manager
	srv   *agenttest.Server
	clk   *clock.Fake
	cache *agentcache.Cache
}

func newFixture(t testing.TB, maxSVIDs int) *fixture {
	t.Helper()
	clk := clock.NewFake(epoch)
	ca := agenttest.NewCA(t, td, clk)
	srv, conn := agenttest.Start(t, ca)
	cache, err := agentcache.Open(filepath.Join(t.TempDir(), agentcache.FileName), agentcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cache.Close() })
	m, err := New(Config{
		TrustDomain:       td,
		Minter:            agentv1.NewAgentServiceClient(conn),
		Store:             cache,
		MaxPreMintedSVIDs: maxSVIDs,
		Clock:             clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := trust.FromProto(td, ca.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	m.SetBundle(b)
	return &fixture{m: m, srv: srv, clk: clk, cache: cache}
}

// setEntries gives entries to both the server (so it mints for them) and,
// through the cache as the sync client would, the manager.
func (f *fixture) setEntries(t *testing.T, entries ...*typesv1.Entry) {
	t.Helper()
	f.srv.SetEntries(entries...)
	if err := f.cache.Apply(agentcache.Change{Reset: true, Upserts: entries}); err != nil {
		t.Fatal(err)
	}
	f.m.mu.Lock()
	var gone []string
	for id := range f.m.entries {
		gone = append(gone, id)
	}
	f.m.mu.Unlock()
	f.m.ApplyEntries(entries, gone)
}

// step mints everything due now, synchronously.
func (f *fixture) step(t *testing.T) {
	t.Helper()
	for {
		batch, _ := f.m.plan()
		if len(batch) == 0 {
			return
		}
		f.m.mintBatch(context.Background(), batch)
	}
}

// run starts the manager's loop until the test ends.
func (f *fixture) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func workloadEntry(n int) *typesv1.Entry {
	return &typesv1.Entry{
		Id:        fmt.Sprintf("e%02d", n),
		SpiffeId:  fmt.Sprintf("spiffe://example.org/workload/%d", n),
		ParentId:  agentID,
		Selectors: []string{fmt.Sprintf("unix:uid:%d", 1000+n)},
		Purpose:   "test workload",
		Owner:     "ops@example.org",
		Revision:  1,
	}
}

func sels(n int) selector.Set {
	return selector.NewSet(selector.Must(fmt.Sprintf("unix:uid:%d", 1000+n)))
}

const waitTimeout = 10 * time.Second

// next waits for the next Update on sub.
func next(t *testing.T, sub workloadapi.Subscription) *workloadapi.Update {
	t.Helper()
	select {
	case u, ok := <-sub.Updates():
		if !ok {
			t.Fatal("subscription closed")
		}
		return u
	case <-time.After(waitTimeout):
		t.Fatal("no update within 10s")
	}
	return nil
}

// nextWhere waits for an Update satisfying ok.
func nextWhere(t *testing.T, sub workloadapi.Subscription, what string, ok func(*workloadapi.Update) bool) *workloadapi.Update {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case u := <-sub.Updates():
			if ok(u) {
				return u
			}
		case <-deadline:
			t.Fatalf("no update with %s within 10s", what)
		}
	}
}

// noPending fails if an Update is waiting on sub.
func noPending(t *testing.T, sub workloadapi.Subscription) {
	t.Helper()
	select {
	case u := <-sub.Updates():
		t.Fatalf("unexpected update with %d identities", len(u.Identities))
	default:
	}
}

// ids lists an Update's SPIFFE IDs, checking each identity is a valid
// X.509-SVID for its entry chaining to the Update's bundle.
func ids(t *testing.T, u *workloadapi.Update) []string {
	t.Helper()
	out := []string{}
	for _, id := range u.Identities {
		got := checkIdentity(t, id, u.Bundle)
		out = append(out, got)
	}
	return out
}

func checkIdentity(t *testing.T, id workloadapi.Identity, b *spiffebundle.Bundle) string {
	t.Helper()
	sv, err := x509svid.ParseRaw(rawChain(id.Certificates), mustPKCS8(t, id))
	if err != nil {
		t.Fatalf("identity for entry %s is not a valid X.509-SVID: %v", id.Entry.GetId(), err)
	}
	if sv.ID.String() != id.Entry.GetSpiffeId() {
		t.Errorf("SVID ID %s, want the entry's %s", sv.ID, id.Entry.GetSpiffeId())
	}
	if _, _, err := x509svid.Verify(id.Certificates, b, x509svid.WithTime(id.Certificates[0].NotBefore.Add(time.Second))); err != nil {
		t.Errorf("SVID does not chain to the bundle: %v", err)
	}
	return sv.ID.String()
}

func serial(u *workloadapi.Update, i int) string {
	return u.Identities[i].Certificates[0].SerialNumber.String()
}

func rawChain(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func mustPKCS8(t *testing.T, id workloadapi.Identity) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(id.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// waitFor polls cond, for state that has no event to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sortStrings(s []string) { slices.Sort(s) }

func cacheChange(entries ...*typesv1.Entry) agentcache.Change {
	return agentcache.Change{Upserts: entries}
}
