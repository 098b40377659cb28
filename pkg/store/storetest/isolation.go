package storetest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var isolationTests = []suiteTest{
	{"MutatingEntriesPassedInOrReturnedChangesNothingStored", testEntryIsolation},
	{"MutatingNodesBundlesAndTokensChangesNothingStored", testOtherIsolation},
}

var contextTests = []suiteTest{
	{"CancelledContextFailsWithoutWriting", testCancelledContext},
}

// mutateEntry scribbles over every field a caller might touch, including
// the shared backing arrays of repeated fields.
func mutateEntry(e *typesv1.Entry) {
	e.SpiffeId, e.ParentId, e.Purpose, e.Revision = "spiffe://evil/x", "spiffe://evil/p", "evil", 999999
	if len(e.Selectors) > 0 {
		e.Selectors[0] = "evil:1"
	}
	e.Selectors = append(e.Selectors, "evil:2")
}

func testEntryIsolation(t *testing.T, s store.Store) {
	in := newEntry("spiffe://example.org/w", "spiffe://example.org/agent", "unix:uid:1")
	created := createEntry(t, s, in)
	want := proto.Clone(created).(*typesv1.Entry)

	mutateEntry(in)
	mutateEntry(created)
	mutateEntry(getEntry(t, s, want.Id))
	list, _, err := s.ListEntries(t.Context(), store.ListEntriesRequest{})
	if err != nil {
		t.Fatalf("ListEntries: %v", err)
	}
	mutateEntry(list[0])
	byParent, _, err := s.ListEntriesByParent(t.Context(), []string{want.ParentId})
	if err != nil {
		t.Fatalf("ListEntriesByParent: %v", err)
	}
	mutateEntry(byParent[0])

	upd := proto.Clone(want).(*typesv1.Entry)
	upd.Purpose = "updated"
	updated, err := s.UpdateEntry(t.Context(), upd)
	if err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	want = proto.Clone(updated).(*typesv1.Entry)
	mutateEntry(upd)
	mutateEntry(updated)

	if diff := protoDiff(want, getEntry(t, s, want.Id)); diff != "" {
		t.Errorf("stored entry changed through a caller's copy (-want +got):\n%s", diff)
	}
	if list, _, _ := s.ListEntries(t.Context(), store.ListEntriesRequest{Selectors: []string{"unix:uid:1"}}); len(list) != 1 {
		t.Errorf("selector index changed through a caller's copy: %d entries", len(list))
	}
}

func testOtherIsolation(t *testing.T, s store.Store) {
	ctx := t.Context()
	in := newNode("spiffe://example.org/agent")
	created := createNode(t, s, in)
	wantNode := proto.Clone(created).(*typesv1.Node)
	in.Status, created.Status = typesv1.NodeStatus_NODE_STATUS_BANNED, typesv1.NodeStatus_NODE_STATUS_BANNED
	in.Selectors[0], created.Selectors[0] = "evil:1", "evil:1"
	got := getNode(t, s, wantNode.SpiffeId)
	got.Selectors[0] = "evil:1"
	var kept *typesv1.Node
	if _, err := s.UpdateNode(ctx, wantNode.SpiffeId, func(n *typesv1.Node) error { kept = n; return nil }); err != nil {
		t.Fatalf("UpdateNode: %v", err)
	}
	kept.SvidSerial = "evil"
	if diff := protoDiff(wantNode, getNode(t, s, wantNode.SpiffeId), protocmp.IgnoreFields(wantNode, "revision")); diff != "" {
		t.Errorf("stored node changed through a caller's copy (-want +got):\n%s", diff)
	}

	bundle, err := s.UpdateBundle(ctx, "example.org", addAuthority("ca-1"))
	if err != nil {
		t.Fatalf("UpdateBundle: %v", err)
	}
	wantBundle := proto.Clone(bundle).(*typesv1.Bundle)
	bundle.X509Authorities[0].Asn1[0] = 'X'
	if got, err := s.GetBundle(ctx, "example.org"); err != nil {
		t.Fatalf("GetBundle: %v", err)
	} else if diff := protoDiff(wantBundle, got); diff != "" {
		t.Errorf("stored bundle changed through a caller's copy (-want +got):\n%s", diff)
	}

	tok := newToken("tok", time.Hour)
	wantTok := proto.Clone(tok).(*typesv1.JoinToken)
	createToken(t, s, tok)
	tok.SecretHash[0] ^= 0xff
	tok.ExpiresAt = 1
	if diff := protoDiff([]*typesv1.JoinToken{wantTok}, listTokens(t, s)); diff != "" {
		t.Errorf("stored token changed through a caller's copy (-want +got):\n%s", diff)
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	node := createNode(t, s, newNode("spiffe://example.org/agent"))
	entry := createEntry(t, s, newEntry("spiffe://example.org/w", "spiffe://example.org/agent"))
	createToken(t, s, newToken("tok", time.Hour))
	before := revision(t, s)
	ctx := cancelledContext()

	upd := proto.Clone(entry).(*typesv1.Entry)
	upd.Purpose = "changed"
	calls := map[string]func(ctx context.Context) error{
		"CreateEntries": func(ctx context.Context) error {
			_, _, err := s.CreateEntries(ctx, []*typesv1.Entry{newEntry("spiffe://example.org/new", "spiffe://example.org/agent")})
			return err
		},
		"UpdateEntry": func(ctx context.Context) error { _, err := s.UpdateEntry(ctx, upd); return err },
		"DeleteEntry": func(ctx context.Context) error { _, err := s.DeleteEntry(ctx, entry.Id); return err },
		"CreateNode": func(ctx context.Context) error {
			_, err := s.CreateNode(ctx, newNode("spiffe://example.org/n2"))
			return err
		},
		"UpdateNode": func(ctx context.Context) error {
			_, err := s.UpdateNode(ctx, node.SpiffeId, func(n *typesv1.Node) error { n.LastSeenAt = 7; return nil })
			return err
		},
		"DeleteNode": func(ctx context.Context) error { return s.DeleteNode(ctx, node.SpiffeId) },
		"UpdateBundle": func(ctx context.Context) error {
			_, err := s.UpdateBundle(ctx, "example.org", addAuthority("x"))
			return err
		},
		"CreateJoinToken": func(ctx context.Context) error { return s.CreateJoinToken(ctx, newToken("tok2", time.Hour)) },
		"UseJoinToken": func(ctx context.Context) error {
			_, err := s.UseJoinToken(ctx, "tok", secretHash("secret-of-tok"), "spiffe://example.org/a", tokenEpoch)
			return err
		},
		"RecordIssued": func(ctx context.Context) error {
			return s.RecordIssued(ctx, []*typesv1.IssuedSVID{newIssued("serial", tokenEpoch)})
		},
		"GetEntry": func(ctx context.Context) error { _, err := s.GetEntry(ctx, entry.Id); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if err := call(ctx); err == nil {
				t.Errorf("%s with a cancelled context succeeded", name)
			}
		})
	}
	if after := revision(t, s); after != before {
		t.Errorf("revision moved from %d to %d", before, after)
	}
	if diff := protoDiff(entry, getEntry(t, s, entry.Id)); diff != "" {
		t.Errorf("entry changed (-want +got):\n%s", diff)
	}
	if diff := protoDiff(node, getNode(t, s, node.SpiffeId)); diff != "" {
		t.Errorf("node changed (-want +got):\n%s", diff)
	}
	if n, err := s.CountEntries(t.Context()); err != nil || n != 1 {
		t.Errorf("CountEntries = %d, %v; want 1", n, err)
	}
	if _, err := s.GetBundle(t.Context(), "example.org"); err == nil {
		t.Error("a cancelled UpdateBundle created the bundle")
	}
	if _, err := s.GetIssued(t.Context(), "serial"); err == nil {
		t.Error("a cancelled RecordIssued wrote a row")
	}
	toks := listTokens(t, s)
	if len(toks) != 1 || toks[0].UsedAt != 0 {
		t.Errorf("tokens after cancelled calls: %v; want only %q, unused", toks, "tok")
	}
}
