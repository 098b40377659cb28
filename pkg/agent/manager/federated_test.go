package manager

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/agent/internal/agenttest"
	"github.com/nhid/nhid/pkg/agent/trust"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/workloadapi"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// fedBundleOf makes a fresh bundle for the trust domain name, as the sync
// client would hand it over.
func (f *fixture) fedBundleOf(t *testing.T, name string) *spiffebundle.Bundle {
	t.Helper()
	ca := agenttest.NewCA(t, spiffeid.RequireTrustDomainFromString(name), f.clk)
	b, err := trust.FederatedFromProto(td, ca.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func federating(n int, tds ...string) *typesv1.Entry {
	e := workloadEntry(n)
	e.FederatesWith = tds
	return e
}

// fedTDs lists the trust domains of an Update's federated bundles, in order.
func fedTDs(u *workloadapi.Update) []string {
	out := []string{}
	for _, b := range u.FederatedBundles {
		out = append(out, b.TrustDomain().Name())
	}
	return out
}

func TestFederatedBundles_OnlyThoseTheMatchedEntriesNameDeduplicatedAndSorted(t *testing.T) {
	f := newFixture(t, 0)
	f.setEntries(t, federating(1, "partner.test", "other.test", "unheld.test"), workloadEntry(2), federating(3, "partner.test"))
	f.m.SetFederatedBundles([]*spiffebundle.Bundle{
		f.fedBundleOf(t, "partner.test"), f.fedBundleOf(t, "other.test"), f.fedBundleOf(t, "third.test"),
	})
	f.step(t)

	tests := []struct {
		name string
		sels selector.Set
		want []string
	}{
		{"entry federating with two held and one unheld trust domain", sels(1), []string{"other.test", "partner.test"}},
		{"entry federating with none", sels(2), []string{}},
		{"two entries naming the same trust domain get it once",
			selector.NewSet(selector.Must("unix:uid:1001"), selector.Must("unix:uid:1003")), []string{"other.test", "partner.test"}},
		{"a caller without entries gets none", selector.NewSet(selector.Must("unix:uid:9")), []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := f.m.Subscribe(tt.sels)
			defer sub.Close()
			if diff := cmp.Diff(tt.want, fedTDs(next(t, sub))); diff != "" {
				t.Errorf("subscription's federated bundles (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, fedTDs(f.m.Current(tt.sels))); diff != "" {
				t.Errorf("Current's federated bundles (-want +got):\n%s", diff)
			}
		})
	}
	if got := testutil.ToFloat64(f.m.metrics.federated); got != 3 {
		t.Errorf("federated_bundles gauge = %v, want 3", got)
	}
}

func TestFederatedBundles_ChangesReachOnlyTheSubscriptionsTheyConcern(t *testing.T) {
	f := newFixture(t, 0)
	f.setEntries(t, federating(1, "partner.test"), federating(2, "other.test"))
	partner, other := f.fedBundleOf(t, "partner.test"), f.fedBundleOf(t, "other.test")
	f.m.SetFederatedBundles([]*spiffebundle.Bundle{partner, other})
	f.step(t)
	sub1, sub2 := f.m.Subscribe(sels(1)), f.m.Subscribe(sels(2))
	defer sub1.Close()
	defer sub2.Close()
	if got := next(t, sub1).FederatedBundles; len(got) != 1 || !got[0].Equal(partner) {
		t.Fatalf("first update's federated bundles = %v, want partner.test's", got)
	}
	next(t, sub2)

	// The same set again, as every new Sync stream sends it: nothing to send.
	f.m.SetFederatedBundles([]*spiffebundle.Bundle{other.Clone(), partner.Clone()})
	noPending(t, sub1)
	noPending(t, sub2)

	rotated := f.fedBundleOf(t, "partner.test")
	f.m.SetFederatedBundles([]*spiffebundle.Bundle{rotated, other})
	if got := next(t, sub1).FederatedBundles; len(got) != 1 || !got[0].Equal(rotated) {
		t.Errorf("federated bundles after partner.test rotated = %v, want the new bundle", got)
	}
	noPending(t, sub2)

	f.m.SetFederatedBundles([]*spiffebundle.Bundle{other})
	if got := fedTDs(next(t, sub1)); len(got) != 0 {
		t.Errorf("federated bundles after partner.test's was deleted = %v, want none", got)
	}
	noPending(t, sub2)

	f.m.SetFederatedBundles(nil)
	if got := fedTDs(next(t, sub2)); len(got) != 0 {
		t.Errorf("federated bundles after an empty set = %v, want none", got)
	}
	noPending(t, sub1)
}

func TestFederatedBundles_EntryFederatesWithChangesReachOpenSubscription(t *testing.T) {
	f := newFixture(t, 0)
	e := workloadEntry(1)
	f.setEntries(t, e)
	f.m.SetFederatedBundles([]*spiffebundle.Bundle{f.fedBundleOf(t, "partner.test")})
	f.step(t)
	sub := f.m.Subscribe(sels(1))
	defer sub.Close()
	first := next(t, sub)
	if got := fedTDs(first); len(got) != 0 {
		t.Fatalf("federated bundles before the entry federates = %v, want none", got)
	}

	fed := proto.Clone(e).(*typesv1.Entry)
	fed.FederatesWith, fed.Revision = []string{"partner.test"}, 2
	f.m.ApplyEntries([]*typesv1.Entry{fed}, nil)
	u := next(t, sub)
	if diff := cmp.Diff([]string{"partner.test"}, fedTDs(u)); diff != "" {
		t.Errorf("federated bundles once the entry federates (-want +got):\n%s", diff)
	}
	if serial(u, 0) != serial(first, 0) {
		t.Error("federating changed the X.509-SVID; it does not describe federation and should be kept")
	}
	f.step(t)
	if calls, _, _ := f.srv.MintStats(); calls != 1 {
		t.Errorf("mint calls = %d, want 1: federates_with is not in the SVID", calls)
	}

	unfed := proto.Clone(e).(*typesv1.Entry)
	unfed.Revision = 3
	f.m.ApplyEntries([]*typesv1.Entry{unfed}, nil)
	if got := fedTDs(next(t, sub)); len(got) != 0 {
		t.Errorf("federated bundles once the entry stops federating = %v, want none", got)
	}
}

func TestFederatedBundles_ABundleArrivingForANamedTrustDomainIsPushed(t *testing.T) {
	f := newFixture(t, 0)
	f.setEntries(t, federating(1, "partner.test"))
	f.step(t)
	sub := f.m.Subscribe(sels(1))
	defer sub.Close()
	if got := fedTDs(next(t, sub)); len(got) != 0 {
		t.Fatalf("federated bundles before any is held = %v, want none", got)
	}
	f.m.SetFederatedBundles([]*spiffebundle.Bundle{f.fedBundleOf(t, "unrelated.test")})
	noPending(t, sub)
	f.m.SetFederatedBundles([]*spiffebundle.Bundle{f.fedBundleOf(t, "unrelated.test"), f.fedBundleOf(t, "partner.test")})
	if diff := cmp.Diff([]string{"partner.test"}, fedTDs(next(t, sub))); diff != "" {
		t.Errorf("federated bundles once partner.test's arrives (-want +got):\n%s", diff)
	}
}

func TestFederatedBundles_OneClaimingTheOwnTrustDomainIsIgnored(t *testing.T) {
	f := newFixture(t, 0)
	e := federating(1, "partner.test")
	f.setEntries(t, e)
	f.step(t)
	sub := f.m.Subscribe(sels(1))
	defer sub.Close()
	own := next(t, sub).Bundle

	impostor, err := trust.FromProto(td, agenttest.NewCA(t, td, f.clk).Bundle())
	if err != nil {
		t.Fatal(err)
	}
	f.m.SetFederatedBundles([]*spiffebundle.Bundle{impostor})
	noPending(t, sub)
	u := f.m.Current(sels(1))
	if len(u.FederatedBundles) != 0 || !u.Bundle.Equal(own) {
		t.Errorf("after a federated bundle claiming example.org: federated %v, own bundle replaced: %v",
			fedTDs(u), !u.Bundle.Equal(own))
	}
}
