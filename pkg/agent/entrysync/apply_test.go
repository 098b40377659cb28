package entrysync

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/agent/internal/agenttest"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/agentcache"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const parent = "spiffe://example.org/nhid/agent/join_token/0123456789abcdef01234567"

func ent(id string, rev int64) *typesv1.Entry {
	return &typesv1.Entry{
		Id:        id,
		SpiffeId:  "spiffe://example.org/w/" + id,
		ParentId:  parent,
		Selectors: []string{"unix:uid:1000"},
		Revision:  rev,
	}
}

// summary is a comparable view of an applied change.
type summary struct {
	Reset    bool
	Upserts  []string // id@revision, sorted
	Deleted  []string // sorted
	Revision int64
	Bundle   bool
	// Federated is the trust domains of a federated set, in cache and
	// target alike; nil when the message set none.
	Federated []string
	Done      bool
	Held      []string // what the applier holds afterwards, sorted
}

func summarise(a *applier, out applied) summary {
	s := summary{
		Reset:    out.change.Reset,
		Revision: out.change.Revision,
		Bundle:   out.change.Bundle != nil,
		Done:     out.done,
		Deleted:  slices.Sorted(slices.Values(out.change.DeletedIDs)),
	}
	for _, e := range out.change.Upserts {
		s.Upserts = append(s.Upserts, e.GetId()+"@"+strconv.FormatInt(e.GetRevision(), 10))
	}
	slices.Sort(s.Upserts)
	if out.federatedSet || out.change.FederatedBundlesSet {
		// What the target gets and what the cache stores must agree; a
		// disagreement shows up as an extra element.
		s.Federated = []string{}
		var cached []string
		for _, b := range out.federated {
			s.Federated = append(s.Federated, b.TrustDomain().Name())
		}
		for _, b := range out.change.FederatedBundles {
			cached = append(cached, b.GetTrustDomain())
		}
		if !out.federatedSet || !out.change.FederatedBundlesSet || !slices.Equal(s.Federated, cached) {
			s.Federated = append(s.Federated, fmt.Sprintf("cache differs: set %v, %v", out.change.FederatedBundlesSet, cached))
		}
	}
	for id, rev := range a.held {
		s.Held = append(s.Held, id+"@"+strconv.FormatInt(rev, 10))
	}
	slices.Sort(s.Held)
	return s
}

func TestApplier(t *testing.T) {
	bundle := agenttest.NewCA(t, td, clock.Real()).Bundle()
	held := &agentcache.State{Revision: 10, Entries: []*typesv1.Entry{ent("a", 1), ent("b", 2), ent("c", 3)}}
	badBundle := &typesv1.Bundle{TrustDomain: "other.org", X509Authorities: bundle.X509Authorities}
	partner := agenttest.NewCA(t, spiffeid.RequireTrustDomainFromString("partner.test"), clock.Real()).Bundle()
	other := agenttest.NewCA(t, spiffeid.RequireTrustDomainFromString("other.test"), clock.Real()).Bundle()
	jwtOnly := proto.Clone(other).(*typesv1.Bundle)
	jwtOnly.X509Authorities = nil
	badFed := proto.Clone(partner).(*typesv1.Bundle)
	badFed.JwtAuthorities[0].PublicKey = []byte("x")
	invalid := ent("b", 11)
	invalid.SpiffeId = "spiffe://other.org/w/b"

	tests := []struct {
		name    string
		dirty   bool
		msgs    []*agentv1.SyncResponse
		want    summary // of the last message
		wantErr string
	}{
		{
			name: "snapshot in pages becomes one change against what is held",
			msgs: []*agentv1.SyncResponse{
				{Reset_: true, Upserts: []*typesv1.Entry{ent("a", 1), ent("b", 12)}, Bundle: bundle},
				{Upserts: []*typesv1.Entry{ent("d", 13)}, SnapshotDone: true, Revision: 13},
			},
			want: summary{Upserts: []string{"b@12", "d@13"}, Deleted: []string{"c"}, Revision: 13, Done: true,
				Held: []string{"a@1", "b@12", "d@13"}},
		},
		{
			name: "a page before the last changes nothing",
			msgs: []*agentv1.SyncResponse{{Reset_: true, Upserts: []*typesv1.Entry{ent("z", 20)}}},
			want: summary{Held: []string{"a@1", "b@2", "c@3"}},
		},
		{
			name: "resume applies upserts and deletes directly",
			msgs: []*agentv1.SyncResponse{{Upserts: []*typesv1.Entry{ent("a", 11)}, DeletedIds: []string{"c", "unknown"}, SnapshotDone: true, Revision: 12}},
			want: summary{Upserts: []string{"a@11"}, Deleted: []string{"c", "unknown"}, Revision: 12, Done: true,
				Held: []string{"a@11", "b@2"}},
		},
		{
			name: "incremental change",
			msgs: []*agentv1.SyncResponse{{Upserts: []*typesv1.Entry{ent("e", 14)}, Revision: 14}},
			want: summary{Upserts: []string{"e@14"}, Revision: 14, Held: []string{"a@1", "b@2", "c@3", "e@14"}},
		},
		{
			name: "an invalid entry is dropped and its earlier version deleted",
			msgs: []*agentv1.SyncResponse{{Upserts: []*typesv1.Entry{invalid, ent("a", 11)}, Revision: 11}},
			want: summary{Upserts: []string{"a@11"}, Deleted: []string{"b"}, Revision: 11, Held: []string{"a@11", "c@3"}},
		},
		{
			name:    "a bundle of another trust domain refuses the message",
			msgs:    []*agentv1.SyncResponse{{Upserts: []*typesv1.Entry{ent("e", 14)}, Bundle: badBundle, Revision: 14}},
			wantErr: "bundle.trust_domain",
		},
		{
			name: "bundle alone",
			msgs: []*agentv1.SyncResponse{{Bundle: bundle}},
			want: summary{Bundle: true, Held: []string{"a@1", "b@2", "c@3"}},
		},
		{
			name: "federated set with the first page of a snapshot",
			msgs: []*agentv1.SyncResponse{{Reset_: true, Upserts: []*typesv1.Entry{ent("z", 20)}, Bundle: bundle,
				FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{partner, jwtOnly}}},
			want: summary{Bundle: true, Federated: []string{"partner.test", "other.test"}, Held: []string{"a@1", "b@2", "c@3"}},
		},
		{
			name: "empty federated set clears them",
			msgs: []*agentv1.SyncResponse{{FederatedBundlesSet: true}},
			want: summary{Federated: []string{}, Held: []string{"a@1", "b@2", "c@3"}},
		},
		{
			name: "federated bundles without the set flag are not a set",
			msgs: []*agentv1.SyncResponse{{FederatedBundles: []*typesv1.Bundle{partner}, Revision: 11}},
			want: summary{Revision: 11, Held: []string{"a@1", "b@2", "c@3"}},
		},
		{
			name: "a federated bundle claiming the own trust domain is left out",
			msgs: []*agentv1.SyncResponse{{FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{bundle, partner}}},
			want: summary{Federated: []string{"partner.test"}, Held: []string{"a@1", "b@2", "c@3"}},
		},
		{
			// One partner's bad bundle must not stall every agent's sync.
			name: "a bad federated bundle is left out and the rest applies",
			msgs: []*agentv1.SyncResponse{{Upserts: []*typesv1.Entry{ent("e", 14)}, Revision: 14, FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{other, badFed}}},
			want: summary{Upserts: []string{"e@14"}, Revision: 14, Federated: []string{"other.test"}, Held: []string{"a@1", "b@2", "c@3", "e@14"}},
		},
		{
			name: "a trust domain twice in the federated set is kept once",
			msgs: []*agentv1.SyncResponse{{FederatedBundlesSet: true, FederatedBundles: []*typesv1.Bundle{partner, other, partner}}},
			want: summary{Federated: []string{"partner.test", "other.test"}, Held: []string{"a@1", "b@2", "c@3"}},
		},
		{
			name:  "after a failed cache write the snapshot rewrites the cache whole",
			dirty: true,
			msgs: []*agentv1.SyncResponse{
				{Reset_: true, Upserts: []*typesv1.Entry{ent("a", 1), ent("b", 2)}, SnapshotDone: true, Revision: 15},
			},
			want: summary{Reset: true, Upserts: []string{"a@1", "b@2"}, Revision: 15, Done: true, Held: []string{"a@1", "b@2"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newApplier(td, slog.New(slog.DiscardHandler), held)
			a.dirty = tt.dirty
			var (
				out applied
				err error
			)
			for _, msg := range tt.msgs {
				if out, err = a.apply(msg); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("apply error = %v, want one containing %q", err, tt.wantErr)
				}
				if diff := cmp.Diff([]string{"a@1", "b@2", "c@3"}, summarise(a, applied{}).Held); diff != "" {
					t.Errorf("refused message changed what is held (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			if diff := cmp.Diff(tt.want, summarise(a, out)); diff != "" {
				t.Errorf("applied (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplier_BrokenSnapshotIsForgottenAndResumeUsesLastRevision(t *testing.T) {
	a := newApplier(td, slog.New(slog.DiscardHandler), &agentcache.State{Revision: 10, Entries: []*typesv1.Entry{ent("a", 1)}})
	if _, err := a.apply(&agentv1.SyncResponse{Reset_: true, Upserts: []*typesv1.Entry{ent("x", 20)}}); err != nil {
		t.Fatal(err)
	}
	a.restart()
	if got := a.sinceRevision(); got != 10 {
		t.Errorf("since revision = %d, want 10", got)
	}
	out, err := a.apply(&agentv1.SyncResponse{SnapshotDone: true, Revision: 21})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.change.Upserts) != 0 || len(out.change.DeletedIDs) != 0 {
		t.Errorf("resume after a broken snapshot applied %v / %v, want nothing from the broken snapshot",
			out.change.Upserts, out.change.DeletedIDs)
	}
	a.persisted(out.change, errBoom)
	if got := a.sinceRevision(); got != 0 {
		t.Errorf("since revision after a failed cache write = %d, want 0 (full snapshot)", got)
	}
}
