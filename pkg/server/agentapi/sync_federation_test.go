package agentapi

import (
	"context"
	"strings"
	"testing"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// federatedTDs names the federated bundles m carries, and whether it
// carries the set at all.
func federatedTDs(m interface {
	GetFederatedBundles() []*typesv1.Bundle
	GetFederatedBundlesSet() bool
}) ([]string, bool) {
	var tds []string
	for _, b := range m.GetFederatedBundles() {
		tds = append(tds, b.GetTrustDomain())
	}
	return tds, m.GetFederatedBundlesSet()
}

func partnerCA(der string) func(*typesv1.Bundle) error {
	return func(b *typesv1.Bundle) error {
		b.X509Authorities = []*typesv1.X509Authority{{Asn1: []byte(der)}}
		return nil
	}
}

func TestSync_FederatedBundlesComeFirstThenWheneverOneChanges(t *testing.T) {
	h := newHarness(t)
	a := h.attest()
	ctx := context.Background()
	if _, err := h.store.UpdateBundle(ctx, "partner.test", partnerCA("partner-ca-1")); err != nil {
		t.Fatal(err)
	}

	r := openSync(t, a.client, 0, 0)
	msgs := r.untilDone(t)
	if tds, set := federatedTDs(msgs[0]); !set || len(tds) != 1 || tds[0] != "partner.test" {
		t.Fatalf("first message's federated bundles %v (set %v), want partner.test's and not our own", tds, set)
	}
	for _, m := range msgs[1:] {
		if m.GetFederatedBundlesSet() {
			t.Errorf("a later snapshot page carries the federated set again: %v", m)
		}
	}

	// A new partner: the whole set again, in trust domain order.
	if _, err := h.store.UpdateBundle(ctx, "acme.example", partnerCA("acme-ca")); err != nil {
		t.Fatal(err)
	}
	m := r.next(t)
	if tds, set := federatedTDs(m); !set || len(tds) != 2 || tds[0] != "acme.example" || tds[1] != "partner.test" || m.GetRevision() == 0 {
		t.Fatalf("after a new partner bundle: %v (set %v, revision %d)", tds, set, m.GetRevision())
	}
	// A rotated partner CA reaches the agent.
	if _, err := h.store.UpdateBundle(ctx, "partner.test", partnerCA("partner-ca-2")); err != nil {
		t.Fatal(err)
	}
	m = r.next(t)
	if got := m.GetFederatedBundles(); len(got) != 2 || string(got[1].GetX509Authorities()[0].GetAsn1()) != "partner-ca-2" {
		t.Fatalf("after a partner rotation: %v", got)
	}
	// Deleting the last partners leaves an empty set that is still sent.
	for _, td := range []string{"acme.example", "partner.test"} {
		if err := h.store.DeleteBundle(ctx, td); err != nil {
			t.Fatal(err)
		}
		m = r.next(t)
	}
	if tds, set := federatedTDs(m); !set || len(tds) != 0 {
		t.Fatalf("after deleting every partner: %v (set %v), want an empty set", tds, set)
	}
	// Our own bundle changing sends the bundle, not the federated set.
	if _, err := h.store.UpdateBundle(ctx, td.Name(), func(b *typesv1.Bundle) error { b.RefreshHint = 77; return nil }); err != nil {
		t.Fatal(err)
	}
	m = r.next(t)
	if m.GetBundle().GetRefreshHint() != 77 || m.GetFederatedBundlesSet() {
		t.Fatalf("after an own bundle change: %v", m)
	}
}

// TestSync_ASnapshotCarriesBothBundlesAsTheyAreNow: a snapshot replaces
// whatever batch of events caused it, bundle changes included, and moves
// the floor past them, so it carries the own and federated bundles.
func TestSync_ASnapshotCarriesBothBundlesAsTheyAreNow(t *testing.T) {
	h := newHarness(t)
	a := h.attestWithSelectors("mover", "test:zone:a")
	ctx := context.Background()
	r := openSync(t, a.client, 0, 0)
	r.untilDone(t)
	if _, err := h.store.UpdateBundle(ctx, "partner.test", partnerCA("partner-ca-1")); err != nil {
		t.Fatal(err)
	}
	if m := r.next(t); len(m.GetFederatedBundles()) != 1 {
		t.Fatalf("after a partner bundle: %v", m)
	}
	if _, err := h.store.UpdateNode(ctx, a.id.String(), func(n *typesv1.Node) error {
		n.Selectors = []string{"test:zone:b"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m := r.next(t)
	if tds, set := federatedTDs(m); !m.GetReset_() || m.GetBundle() == nil || !set || len(tds) != 1 || tds[0] != "partner.test" {
		t.Fatalf("snapshot after the node's selectors changed: reset %v, bundle %v, federated %v (set %v)", m.GetReset_(), m.GetBundle() != nil, tds, set)
	}
}

// TestSync_LargePartnerBundlesPushEntriesToLaterPages: the federated set
// counts against the first page's size budget.
func TestSync_LargePartnerBundlesPushEntriesToLaterPages(t *testing.T) {
	h := newHarness(t)
	a := h.attest()
	ctx := context.Background()
	big := strings.Repeat("x", maxSyncMessageBytes/2)
	for _, td := range []string{"one.test", "two.test"} {
		if _, err := h.store.UpdateBundle(ctx, td, partnerCA(big)); err != nil {
			t.Fatal(err)
		}
	}
	h.createEntries(workload("w1", a.id.String()), workload("w2", a.id.String()), workload("w3", a.id.String()))
	r := openSync(t, a.client, 0, 0)
	msgs := r.untilDone(t)
	if len(msgs) < 2 || len(msgs[0].GetFederatedBundles()) != 2 || len(msgs[0].GetUpserts()) > 1 {
		t.Fatalf("%d messages, first with %d federated bundles and %d entries; want the bundles with at most one entry, then the rest",
			len(msgs), len(msgs[0].GetFederatedBundles()), len(msgs[0].GetUpserts()))
	}
	r.waitView(t, "spiffe://example.org/w1", "spiffe://example.org/w2", "spiffe://example.org/w3")
}
