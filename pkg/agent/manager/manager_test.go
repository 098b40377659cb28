package manager

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/workloadapi"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestSubscribe_DeliversMatchingPreMintedSVIDsWithTheBundle(t *testing.T) {
	f := newFixture(t, 0)
	e1, e2 := workloadEntry(1), workloadEntry(2)
	both := proto.Clone(workloadEntry(3)).(*typesv1.Entry)
	both.Selectors = []string{"unix:gid:50", "unix:uid:1001"}
	f.setEntries(t, e1, e2, both)
	f.step(t)

	tests := []struct {
		name string
		sels selector.Set
		want []string
	}{
		{"one selector matches one entry", sels(1), []string{"spiffe://example.org/workload/1"}},
		{"all of an entry's selectors are needed", selector.NewSet(selector.Must("unix:gid:50")), []string{}},
		{"a workload with more selectors gets every entry it matches",
			selector.NewSet(selector.Must("unix:uid:1001"), selector.Must("unix:gid:50"), selector.Must("unix:user:x")),
			[]string{"spiffe://example.org/workload/1", "spiffe://example.org/workload/3"}},
		{"no entry", selector.NewSet(selector.Must("unix:uid:9")), []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := f.m.Subscribe(tt.sels)
			defer sub.Close()
			u := next(t, sub)
			if diff := cmp.Diff(tt.want, ids(t, u)); diff != "" {
				t.Errorf("identities (-want +got):\n%s", diff)
			}
			if u.Bundle == nil || len(u.Bundle.X509Authorities()) != 1 || len(u.Bundle.JWTAuthorities()) != 1 {
				t.Errorf("bundle = %v, want the CA's X.509 and JWT authorities", u.Bundle)
			}
			if diff := cmp.Diff(ids(t, u), ids(t, f.m.Current(tt.sels))); diff != "" {
				t.Errorf("Current differs from the subscription (-sub +current):\n%s", diff)
			}
		})
	}
	if _, csrs, _ := f.srv.MintStats(); csrs != 3 {
		t.Errorf("CSRs signed = %d, want 3 (one per entry)", csrs)
	}
}

func TestRotation_HappensAtAboutHalfLifeAndReachesSubscription(t *testing.T) {
	f := newFixture(t, 0)
	f.setEntries(t, workloadEntry(1))
	f.step(t)
	sub := f.m.Subscribe(sels(1))
	defer sub.Close()
	first := next(t, sub)

	f.clk.Add(26 * time.Minute) // before 45% of the 1h life
	f.step(t)
	noPending(t, sub)
	if calls, _, _ := f.srv.MintStats(); calls != 1 {
		t.Fatalf("mint calls before the rotation point = %d, want 1", calls)
	}

	f.clk.Add(8 * time.Minute) // past 55% of the life
	f.step(t)
	rotated := next(t, sub)
	if serial(rotated, 0) == serial(first, 0) {
		t.Fatal("SVID was not rotated past half life")
	}
	leaf := rotated.Identities[0].Certificates[0]
	if !leaf.NotBefore.Equal(f.clk.Now().Truncate(time.Second)) && !leaf.NotBefore.Equal(f.clk.Now()) {
		t.Errorf("rotated SVID NotBefore = %v, want about %v", leaf.NotBefore, f.clk.Now())
	}
}

func TestSubscription_KeepsOnlyTheNewestUndeliveredUpdate(t *testing.T) {
	f := newFixture(t, 0)
	e := workloadEntry(1)
	f.setEntries(t, e)
	f.step(t)
	sub := f.m.Subscribe(sels(1))
	defer sub.Close()
	next(t, sub)

	for i := 2; i <= 5; i++ {
		changed := proto.Clone(e).(*typesv1.Entry)
		changed.Hint = "hint " + string(rune('0'+i))
		changed.Revision = int64(i)
		f.m.ApplyEntries([]*typesv1.Entry{changed}, nil)
	}
	u := next(t, sub)
	if got := u.Identities[0].Entry.GetHint(); got != "hint 5" {
		t.Errorf("delivered hint = %q, want the newest, %q", got, "hint 5")
	}
	noPending(t, sub)
}

func TestEntryChanges_ReachOpenSubscription(t *testing.T) {
	f := newFixture(t, 0)
	f.run(t)
	e := workloadEntry(1)
	f.setEntries(t, e)
	sub := f.m.Subscribe(sels(1))
	defer sub.Close()
	first := nextWhere(t, sub, "one identity", func(u *workloadapi.Update) bool { return len(u.Identities) == 1 })

	renamed := proto.Clone(e).(*typesv1.Entry)
	renamed.SpiffeId, renamed.Revision = "spiffe://example.org/workload/renamed", 2
	f.srv.SetEntries(renamed)
	f.m.ApplyEntries([]*typesv1.Entry{renamed}, nil)
	// The very next Update carries the new SVID: none goes out without the
	// identity while it is minted, which would end the workload's stream.
	u := next(t, sub)
	if diff := cmp.Diff([]string{renamed.SpiffeId}, ids(t, u)); diff != "" {
		t.Errorf("identities after rename (-want +got):\n%s", diff)
	}
	if serial(u, 0) == serial(first, 0) {
		t.Error("renamed entry kept its old SVID")
	}

	moved := proto.Clone(renamed).(*typesv1.Entry)
	moved.Selectors, moved.Revision = []string{"unix:uid:4242"}, 3
	f.m.ApplyEntries([]*typesv1.Entry{moved}, nil)
	if u := next(t, sub); len(u.Identities) != 0 {
		t.Errorf("after its selectors changed the entry is still served: %v", ids(t, u))
	}

	f.m.ApplyEntries([]*typesv1.Entry{renamed}, nil)
	nextWhere(t, sub, "the entry back", func(u *workloadapi.Update) bool { return len(u.Identities) == 1 })
	f.m.ApplyEntries(nil, []string{renamed.Id})
	if u := next(t, sub); len(u.Identities) != 0 {
		t.Errorf("deleted entry is still served: %v", ids(t, u))
	}
}

func TestEntryExpiry_WithdrawsTheIdentity(t *testing.T) {
	f := newFixture(t, 0)
	e := workloadEntry(1)
	e.ExpiresAt = epoch.Add(10 * time.Minute).Unix()
	f.setEntries(t, e)
	f.step(t)
	sub := f.m.Subscribe(sels(1))
	defer sub.Close()
	if u := next(t, sub); len(u.Identities) != 1 {
		t.Fatalf("identities before expiry = %d, want 1", len(u.Identities))
	}
	f.clk.Add(10 * time.Minute)
	f.step(t)
	if u := next(t, sub); len(u.Identities) != 0 {
		t.Errorf("expired entry is still served: %v", ids(t, u))
	}
	if _, svids := f.m.Counts(); svids != 0 {
		t.Errorf("SVIDs held after expiry = %d, want 0", svids)
	}
}

func TestEntriesNeverServed(t *testing.T) {
	alias := workloadEntry(1)
	alias.ParentId = "spiffe://example.org/nhid/server"
	expired := workloadEntry(2)
	expired.ExpiresAt = epoch.Add(-time.Second).Unix()
	f := newFixture(t, 0)
	f.setEntries(t, alias, expired)
	f.step(t)
	for n, name := range map[int]string{1: "node alias", 2: "expired entry"} {
		if u := f.m.Current(sels(n)); len(u.Identities) != 0 {
			t.Errorf("%s is served", name)
		}
	}
	if _, csrs, _ := f.srv.MintStats(); csrs != 0 {
		t.Errorf("CSRs signed = %d, want 0", csrs)
	}
}

func TestPreMintBound_MintsOnDemandAndDropsLeastRecentlyUsed(t *testing.T) {
	f := newFixture(t, 2)
	f.run(t)
	f.setEntries(t, workloadEntry(1), workloadEntry(2), workloadEntry(3), workloadEntry(4))
	waitFor(t, "two pre-minted SVIDs", func() bool { _, n := f.m.Counts(); return n == 2 })
	held := f.heldIDs()
	if diff := cmp.Diff([]string{"e01", "e02"}, held); diff != "" {
		t.Fatalf("pre-minted (-want +got):\n%s", diff)
	}

	sub4 := f.m.Subscribe(sels(4)) // beyond the bound: minted on demand
	defer sub4.Close()
	if got := ids(t, next(t, sub4)); len(got) != 1 {
		t.Fatalf("on-demand subscription got %v, want one identity", got)
	}
	// e01 was installed before e02, so it is the least recently used.
	if diff := cmp.Diff([]string{"e02", "e04"}, f.heldIDs()); diff != "" {
		t.Errorf("held after on-demand mint (-want +got):\n%s", diff)
	}

	sub2 := f.m.Subscribe(sels(2))
	next(t, sub2)
	sub3 := f.m.Subscribe(sels(3))
	next(t, sub3)
	// Every held SVID is in use, so the bound gives way.
	if diff := cmp.Diff([]string{"e02", "e03", "e04"}, f.heldIDs()); diff != "" {
		t.Errorf("held with all subscribed (-want +got):\n%s", diff)
	}
	sub2.Close()
	sub3.Close()
	if u := f.m.Current(sels(1)); len(u.Identities) != 1 {
		t.Fatalf("Current for an unminted entry got %d identities, want 1", len(u.Identities))
	}
	if diff := cmp.Diff([]string{"e01", "e04"}, f.heldIDs()); diff != "" {
		t.Errorf("held after closing subscriptions and a new demand (-want +got):\n%s", diff)
	}
}

func (f *fixture) heldIDs() []string {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	var out []string
	for id, r := range f.m.entries {
		if r.svid != nil {
			out = append(out, id)
		}
	}
	sortStrings(out)
	return out
}

func TestMint_BatchesAtMost500CSRs(t *testing.T) {
	f := newFixture(t, 0)
	var entries []*typesv1.Entry
	for i := range 1100 {
		entries = append(entries, workloadEntry(i))
	}
	f.setEntries(t, entries...)
	f.step(t)
	calls, csrs, _ := f.srv.MintStats()
	if calls != 3 || csrs != 1100 {
		t.Errorf("mint calls, CSRs = %d, %d; want 3, 1100", calls, csrs)
	}
	st, err := f.cache.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.SVIDs) != 1100 {
		t.Errorf("SVIDs persisted = %d, want 1100", len(st.SVIDs))
	}
}

func TestMint_ServerFailureIsRetriedAfterBackoff(t *testing.T) {
	f := newFixture(t, 0)
	f.setEntries(t, workloadEntry(1))
	f.srv.FailMint(status.Error(codes.Unavailable, "server down"))
	f.step(t)
	if _, n := f.m.Counts(); n != 0 {
		t.Fatalf("SVIDs held after failure = %d, want 0", n)
	}
	f.step(t) // still backing off: no new call
	if calls, _, _ := f.srv.MintStats(); calls != 1 {
		t.Errorf("mint calls while backing off = %d, want 1", calls)
	}
	f.srv.FailMint(nil)
	f.clk.Add(time.Minute)
	f.step(t)
	if _, n := f.m.Counts(); n != 1 {
		t.Errorf("SVIDs held after recovery = %d, want 1", n)
	}
}

func TestMint_RefusesAnSVIDThatIsNotForTheEntry(t *testing.T) {
	f := newFixture(t, 0)
	e := workloadEntry(1)
	f.setEntries(t, e)
	other := proto.Clone(e).(*typesv1.Entry)
	other.SpiffeId = "spiffe://example.org/someone-else"
	f.srv.SetEntries(other)
	f.step(t)
	if _, n := f.m.Counts(); n != 0 {
		t.Errorf("SVIDs held = %d, want 0: the server's SVID names another ID", n)
	}
}

func TestFetchJWTSVID(t *testing.T) {
	f := newFixture(t, 0)
	e := workloadEntry(1)
	f.setEntries(t, e)
	ctx := context.Background()

	tok1, err := f.m.FetchJWTSVID(ctx, e, []string{"b", "a"})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	tok2, err := f.m.FetchJWTSVID(ctx, e, []string{"a", "b", "a"})
	if err != nil || tok2 != tok1 {
		t.Errorf("second fetch = %v (same token %v), want the cached token", err, tok2 == tok1)
	}
	if _, _, jwtCalls := f.srv.MintStats(); jwtCalls != 1 {
		t.Errorf("JWT mint calls = %d, want 1", jwtCalls)
	}
	f.clk.Add(151 * time.Second) // past half of the 5 min life
	if tok3, err := f.m.FetchJWTSVID(ctx, e, []string{"a", "b"}); err != nil || tok3 == tok1 {
		t.Errorf("fetch past half life = %v (new token %v), want a new token", err, tok3 != tok1)
	}
	if _, err := f.m.FetchJWTSVID(ctx, e, []string{"c"}); err != nil {
		t.Errorf("fetch for another audience: %v", err)
	}
	if _, _, jwtCalls := f.srv.MintStats(); jwtCalls != 3 {
		t.Errorf("JWT mint calls = %d, want 3", jwtCalls)
	}

	errTests := []struct {
		name    string
		entry   *typesv1.Entry
		aud     []string
		wantErr string
	}{
		{"no audience", e, nil, "audience: must not be empty"},
		{"empty audience value", e, []string{"a", ""}, "audience[1]"},
		{"entry without id", &typesv1.Entry{}, []string{"a"}, "entry.id"},
		{"entry not served", workloadEntry(7), []string{"a"}, ErrUnknownEntry.Error()},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.m.FetchJWTSVID(ctx, tt.entry, tt.aud)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	f.srv.FailMint(status.Error(codes.PermissionDenied, "node evicted"))
	if _, err := f.m.FetchJWTSVID(ctx, e, []string{"new"}); status.Code(errors.Unwrap(err)) != codes.PermissionDenied {
		t.Errorf("fetch while the server refuses = %v, want the server's PermissionDenied", err)
	}
}

func TestLoad_RestoresValidSVIDsAndDropsTheRest(t *testing.T) {
	f := newFixture(t, 0)
	short := workloadEntry(2)
	short.X509Ttl = 600
	f.setEntries(t, workloadEntry(1), short, workloadEntry(3))
	f.step(t)
	changed := workloadEntry(3)
	changed.Purpose, changed.Revision = "a new purpose", 2
	if err := f.cache.Apply(cacheChange(changed)); err != nil {
		t.Fatal(err)
	}
	f.clk.Add(11 * time.Minute) // e02's SVID has expired
	st, err := f.cache.Load()
	if err != nil {
		t.Fatal(err)
	}

	m2, err := New(Config{TrustDomain: td, Minter: f.m.minter, Store: f.cache, Clock: f.clk})
	if err != nil {
		t.Fatal(err)
	}
	if kept := m2.Load(st); kept != 1 {
		t.Errorf("Load kept %d SVIDs, want 1 (e01)", kept)
	}
	st, err = f.cache.Load()
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for _, s := range st.SVIDs {
		stored = append(stored, s.EntryID)
	}
	if diff := cmp.Diff([]string{"e01"}, stored); diff != "" {
		t.Errorf("SVIDs left in the cache (-want +got):\n%s", diff)
	}
}

func TestSubscription_CloseEndsUpdatesAndIsIdempotent(t *testing.T) {
	f := newFixture(t, 0)
	sub := f.m.Subscribe(sels(1))
	next(t, sub)
	sub.Close()
	sub.Close()
	if _, ok := <-sub.Updates(); ok {
		t.Error("Updates still open after Close")
	}
	f.setEntries(t, workloadEntry(1)) // must not send on the closed subscription
}

func TestNew_RejectsBadConfig(t *testing.T) {
	f := newFixture(t, 0)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no trust domain", Config{Minter: f.m.minter}, "trust domain"},
		{"no minter", Config{TrustDomain: td}, "minter"},
		{"bad key type", Config{TrustDomain: td, Minter: f.m.minter, KeyType: "dsa"}, "key type"},
		{"negative bound", Config{TrustDomain: td, Minter: f.m.minter, MaxPreMintedSVIDs: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRotationLag_IsHowFarPastItsRotationPointTheMostOverdueSVIDIs(t *testing.T) {
	f := newFixture(t, 0)
	f.setEntries(t, workloadEntry(1))
	f.step(t)
	if got := testutil.ToFloat64(f.m.metrics.rotationLag); got != 0 {
		t.Fatalf("lag before the rotation point = %v, want 0", got)
	}
	f.srv.FailMint(status.Error(codes.Unavailable, "server down"))
	f.clk.Add(40 * time.Minute) // 7 to 13 minutes past the rotation point
	f.step(t)
	got := testutil.ToFloat64(f.m.metrics.rotationLag)
	if got < 7*60 || got > 13*60 {
		t.Errorf("lag = %vs, want between 420 and 780", got)
	}
	if u := f.m.Current(sels(1)); len(u.Identities) != 1 {
		t.Errorf("an overdue but valid SVID is not served: %d identities", len(u.Identities))
	}
}
