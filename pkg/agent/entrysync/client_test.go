package entrysync

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agent/internal/agenttest"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/agentcache"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var errBoom = errors.New("boom")

const waitTimeout = 10 * time.Second

// recorder is a Target that records what it is given.
type recorder struct {
	mu      sync.Mutex
	entries map[string]int64
	bundles int
	// federated is the trust domains of the last federated set, or nil.
	federated []string
	changed   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{entries: make(map[string]int64), changed: make(chan struct{}, 100)}
}

func (r *recorder) ApplyEntries(upserts []*typesv1.Entry, deleted []string) {
	r.mu.Lock()
	for _, id := range deleted {
		delete(r.entries, id)
	}
	for _, e := range upserts {
		r.entries[e.GetId()] = e.GetRevision()
	}
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recorder) SetBundle(*spiffebundle.Bundle) {
	r.mu.Lock()
	r.bundles++
	r.mu.Unlock()
}

func (r *recorder) SetFederatedBundles(bundles []*spiffebundle.Bundle) {
	r.mu.Lock()
	r.federated = []string{}
	for _, b := range bundles {
		r.federated = append(r.federated, b.TrustDomain().Name())
	}
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recorder) federatedTDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.federated)
}

func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(func(yield func(string) bool) {
		for id := range r.entries {
			if !yield(id) {
				return
			}
		}
	})
}

func waitChange(t *testing.T, r *recorder) {
	t.Helper()
	select {
	case <-r.changed:
	case <-time.After(waitTimeout):
		t.Fatal("no entry change applied within 10s")
	}
}

func nextStream(t *testing.T, srv *agenttest.Server) *agenttest.SyncStream {
	t.Helper()
	select {
	case st := <-srv.Syncs:
		return st
	case <-time.After(waitTimeout):
		t.Fatal("no Sync call within 10s")
	}
	return nil
}

func startClient(t *testing.T, srv *agenttest.Server, conn agentv1.AgentServiceClient, cache *agentcache.Cache, target Target) *Client {
	t.Helper()
	st, err := cache.Load()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{TrustDomain: td, Syncer: conn, Cache: cache, Target: target, Initial: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func TestRun_PersistsEachMessageAndResumesFromTheLastRevision(t *testing.T) {
	ca := agenttest.NewCA(t, td, clock.Real())
	srv, conn := agenttest.Start(t, ca)
	path := filepath.Join(t.TempDir(), agentcache.FileName)
	cache, err := agentcache.Open(path, agentcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cache.Close() })
	target := newRecorder()
	c := startClient(t, srv, agentv1.NewAgentServiceClient(conn), cache, target)

	st := nextStream(t, srv)
	if got := st.Request.GetSinceRevision(); got != 0 {
		t.Errorf("first Sync since_revision = %d, want 0", got)
	}
	st.Send <- &agentv1.SyncResponse{Reset_: true, Upserts: []*typesv1.Entry{ent("a", 1)}, Bundle: ca.Bundle()}
	st.Send <- &agentv1.SyncResponse{Upserts: []*typesv1.Entry{ent("b", 2)}, SnapshotDone: true, Revision: 2}
	waitChange(t, target)
	select {
	case <-c.Synced():
	case <-time.After(waitTimeout):
		t.Fatal("not synced after the snapshot")
	}
	st.Send <- &agentv1.SyncResponse{DeletedIds: []string{"a"}, Revision: 3}
	waitChange(t, target)
	if diff := cmp.Diff([]string{"b"}, target.ids()); diff != "" {
		t.Errorf("target entries (-want +got):\n%s", diff)
	}

	st.End <- status.Error(codes.Unavailable, "server restarting")
	st = nextStream(t, srv)
	if got := st.Request.GetSinceRevision(); got != 3 {
		t.Errorf("Sync after a broken stream since_revision = %d, want 3", got)
	}
	got, err := cache.Load()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range got.Entries {
		ids = append(ids, e.GetId())
	}
	if got.Revision != 3 || got.Bundle == nil || !slices.Equal(ids, []string{"b"}) {
		t.Errorf("cache = revision %d, bundle %v, entries %v; want 3, a bundle, [b]", got.Revision, got.Bundle != nil, ids)
	}
}

func TestRun_ARestartedClientResumesFromTheCachedRevision(t *testing.T) {
	ca, srv, conn, cache := newSyncHarness(t)
	if err := cache.Apply(agentcache.Change{Upserts: []*typesv1.Entry{ent("a", 7)}, Revision: 7, Bundle: ca.Bundle()}); err != nil {
		t.Fatal(err)
	}
	startClient(t, srv, agentv1.NewAgentServiceClient(conn), cache, newRecorder())
	if got := nextStream(t, srv).Request.GetSinceRevision(); got != 7 {
		t.Errorf("since_revision = %d, want the cached 7", got)
	}
}

func TestRun_ARefusedMessageReconnects(t *testing.T) {
	ca, srv, conn, cache := newSyncHarness(t)
	target := newRecorder()
	startClient(t, srv, agentv1.NewAgentServiceClient(conn), cache, target)
	st := nextStream(t, srv)
	bad := ca.Bundle()
	bad.X509Authorities = nil
	st.Send <- &agentv1.SyncResponse{Reset_: true, Upserts: []*typesv1.Entry{ent("a", 1)}, Bundle: bad, SnapshotDone: true, Revision: 1}
	st = nextStream(t, srv)
	if got := st.Request.GetSinceRevision(); got != 0 {
		t.Errorf("since_revision after a refused snapshot = %d, want 0", got)
	}
	if ids := target.ids(); len(ids) != 0 {
		t.Errorf("refused message reached the target: %v", ids)
	}
}

func TestRun_FederatedBundlesArePersistedThenHandedToTheTarget(t *testing.T) {
	ca, srv, conn, cache := newSyncHarness(t)
	target := newRecorder()
	startClient(t, srv, agentv1.NewAgentServiceClient(conn), cache, target)
	partner := federatedBundle(t, "partner.test")
	st := nextStream(t, srv)
	st.Send <- &agentv1.SyncResponse{Reset_: true, SnapshotDone: true, Revision: 1, Bundle: ca.Bundle(),
		FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{partner, ca.Bundle()}}
	waitChange(t, target)
	if diff := cmp.Diff([]string{"partner.test"}, target.federatedTDs()); diff != "" {
		t.Errorf("federated bundles given to the target (-want +got):\n%s", diff)
	}
	if got := cachedFederated(t, cache); !slices.Equal(got, []string{"partner.test"}) {
		t.Errorf("cached federated bundles = %v, want [partner.test] (the own trust domain's left out)", got)
	}

	st.Send <- &agentv1.SyncResponse{FederatedBundlesSet: true}
	waitChange(t, target)
	if got := target.federatedTDs(); got == nil || len(got) != 0 {
		t.Errorf("federated bundles after an empty set = %v, want an empty set", got)
	}
	if got := cachedFederated(t, cache); len(got) != 0 {
		t.Errorf("cached federated bundles after an empty set = %v, want none", got)
	}
}

func TestRun_ABadFederatedBundleIsLeftOutAndTheRestApplies(t *testing.T) {
	ca, srv, conn, cache := newSyncHarness(t)
	target := newRecorder()
	startClient(t, srv, agentv1.NewAgentServiceClient(conn), cache, target)
	bad := federatedBundle(t, "partner.test")
	bad.X509Authorities[0].Asn1 = []byte("not a certificate")
	st := nextStream(t, srv)
	st.Send <- &agentv1.SyncResponse{Reset_: true, Upserts: []*typesv1.Entry{ent("a", 1)}, Bundle: ca.Bundle(), SnapshotDone: true, Revision: 1,
		FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{bad, federatedBundle(t, "good.test")}}
	deadline := time.After(waitTimeout)
	for !slices.Equal(target.ids(), []string{"a"}) || !slices.Equal(target.federatedTDs(), []string{"good.test"}) {
		select {
		case <-target.changed:
		case <-deadline:
			t.Fatalf("snapshot not applied without the bad partner bundle: entries %v, federated %v", target.ids(), target.federatedTDs())
		}
	}
	if got := cachedFederated(t, cache); !slices.Equal(got, []string{"good.test"}) {
		t.Errorf("cached federated bundles = %v, want only good.test", got)
	}
}

func federatedBundle(t *testing.T, name string) *typesv1.Bundle {
	t.Helper()
	return agenttest.NewCA(t, spiffeid.RequireTrustDomainFromString(name), clock.Real()).Bundle()
}

func cachedFederated(t *testing.T, cache *agentcache.Cache) []string {
	t.Helper()
	st, err := cache.Load()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range st.FederatedBundles {
		out = append(out, b.GetTrustDomain())
	}
	return out
}

// newSyncHarness starts a fake server with a CA of td and opens an empty
// agent cache.
func newSyncHarness(t *testing.T) (*agenttest.CA, *agenttest.Server, *grpc.ClientConn, *agentcache.Cache) {
	t.Helper()
	ca := agenttest.NewCA(t, td, clock.Real())
	srv, conn := agenttest.Start(t, ca)
	cache, err := agentcache.Open(filepath.Join(t.TempDir(), agentcache.FileName), agentcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cache.Close() })
	return ca, srv, conn, cache
}

func TestNew_RequiresItsParts(t *testing.T) {
	for name, cfg := range map[string]Config{
		"trust domain": {},
		"syncer":       {TrustDomain: td},
		"cache":        {TrustDomain: td, Syncer: agentv1.NewAgentServiceClient(nil)},
		"target":       {TrustDomain: td, Syncer: agentv1.NewAgentServiceClient(nil), Cache: &agentcache.Cache{}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New without %s succeeded", name)
		}
	}
}
