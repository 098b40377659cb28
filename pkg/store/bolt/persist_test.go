package bolt_test

import (
	"crypto/sha256"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// snapshot is everything a reopened store must still hold.
type snapshot struct {
	Revision int64
	Entries  []*typesv1.Entry
	Nodes    []*typesv1.Node
	Tokens   []*typesv1.JoinToken
	Bundle   *typesv1.Bundle
	Issued   *typesv1.IssuedSVID
	Changed  []*typesv1.Entry
	Deleted  []string
	BySel    []*typesv1.Entry
	ByParent []*typesv1.Entry
}

func takeSnapshot(t *testing.T, s *bolt.Store, since int64) snapshot {
	t.Helper()
	ctx := t.Context()
	var snap snapshot
	var err error
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	snap.Revision, err = s.Revision(ctx)
	must("Revision", err)
	snap.Entries, _, err = s.ListEntries(ctx, store.ListEntriesRequest{})
	must("ListEntries", err)
	snap.BySel, _, err = s.ListEntries(ctx, store.ListEntriesRequest{Selectors: []string{"unix:uid:1"}})
	must("ListEntries by selector", err)
	snap.ByParent, _, err = s.ListEntriesByParent(ctx, []string{"spiffe://example.org/agent"})
	must("ListEntriesByParent", err)
	snap.Nodes, _, err = s.ListNodes(ctx, 0, "")
	must("ListNodes", err)
	snap.Tokens, err = s.ListJoinTokens(ctx)
	must("ListJoinTokens", err)
	snap.Bundle, err = s.GetBundle(ctx, "example.org")
	must("GetBundle", err)
	snap.Issued, err = s.GetIssued(ctx, "0a0b")
	must("GetIssued", err)
	snap.Changed, snap.Deleted, _, err = s.EntryChangesSince(ctx, since)
	must("EntryChangesSince", err)
	return snap
}

func TestReopen_KeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nhid.db")
	fake := clock.NewFake(time.Unix(1700000000, 0))
	s, err := bolt.Open(path, bolt.Options{Clock: fake})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx := t.Context()
	created, _, err := s.CreateEntries(ctx, []*typesv1.Entry{
		{SpiffeId: "spiffe://example.org/a", ParentId: "spiffe://example.org/agent", Selectors: []string{"unix:uid:1"}},
		{SpiffeId: "spiffe://example.org/b", ParentId: "spiffe://example.org/agent", Selectors: []string{"unix:uid:2"}},
	})
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	if created[0].CreatedAt != 1700000000 {
		t.Errorf("CreatedAt = %d, want the injected clock's 1700000000", created[0].CreatedAt)
	}
	since, _ := s.Revision(ctx)
	if _, err := s.DeleteEntry(ctx, created[1].Id); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	if _, err := s.CreateNode(ctx, &typesv1.Node{SpiffeId: "spiffe://example.org/agent", Status: typesv1.NodeStatus_NODE_STATUS_ACTIVE}); err != nil {
		t.Fatalf("CreateNode: %v", err)
	}
	hash := sha256.Sum256([]byte("secret"))
	for _, id := range []string{"used", "fresh"} {
		if err := s.CreateJoinToken(ctx, &typesv1.JoinToken{Id: id, SecretHash: hash[:], ExpiresAt: 1700000600}); err != nil {
			t.Fatalf("CreateJoinToken: %v", err)
		}
	}
	if _, err := s.UseJoinToken(ctx, "used", hash[:], "spiffe://example.org/agent", time.Unix(1700000100, 0)); err != nil {
		t.Fatalf("UseJoinToken: %v", err)
	}
	if _, err := s.UpdateBundle(ctx, "example.org", func(b *typesv1.Bundle) error {
		b.X509Authorities = append(b.X509Authorities, &typesv1.X509Authority{Asn1: []byte{1, 2, 3}})
		return nil
	}); err != nil {
		t.Fatalf("UpdateBundle: %v", err)
	}
	if err := s.RecordIssued(ctx, []*typesv1.IssuedSVID{{Id: "0a0b", SpiffeId: "spiffe://example.org/a", ExpiresAt: 1700003600}}); err != nil {
		t.Fatalf("RecordIssued: %v", err)
	}
	before := takeSnapshot(t, s, since)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	after := takeSnapshot(t, s, since)
	if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
		t.Errorf("state after reopen (-before +after):\n%s", diff)
	}
	if _, err := s.UseJoinToken(ctx, "used", hash[:], "spiffe://example.org/other", time.Unix(1700000200, 0)); err == nil {
		t.Error("a used token became usable again after reopen")
	}
	next, _, err := s.CreateEntries(ctx, []*typesv1.Entry{{SpiffeId: "spiffe://example.org/c", ParentId: "spiffe://example.org/agent"}})
	if err != nil {
		t.Fatalf("CreateEntries after reopen: %v", err)
	}
	if next[0].Revision != before.Revision+1 {
		t.Errorf("first write after reopen took revision %d, want %d", next[0].Revision, before.Revision+1)
	}
}
