package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var nodeTests = []suiteTest{
	{"CreateStoresTheNodeOnce", testCreateNode},
	{"UpdateAppliesFn", testUpdateNode},
	{"UpdateFnErrorChangesNothing", testUpdateNodeFnError},
	{"UpdateOfUnknownNodeIsNotFound", testUpdateNodeNotFound},
	{"ListPagesInSPIFFEIDOrder", testListNodes},
	{"DeleteRemovesTheNode", testDeleteNode},
}

func newNode(spiffeID string) *typesv1.Node {
	return &typesv1.Node{
		SpiffeId:     spiffeID,
		AttestorType: "join_token",
		Selectors:    []string{"join_token:abc"},
		Status:       typesv1.NodeStatus_NODE_STATUS_ACTIVE,
		SvidSerial:   "0a1b",
		AttestedAt:   1700000000,
	}
}

func createNode(t *testing.T, s store.Store, n *typesv1.Node) *typesv1.Node {
	t.Helper()
	got, err := s.CreateNode(t.Context(), n)
	if err != nil {
		t.Fatalf("CreateNode(%q): %v", n.SpiffeId, err)
	}
	return got
}

func getNode(t *testing.T, s store.Store, id string) *typesv1.Node {
	t.Helper()
	n, err := s.GetNode(t.Context(), id)
	if err != nil {
		t.Fatalf("GetNode(%q): %v", id, err)
	}
	return n
}

func testCreateNode(t *testing.T, s store.Store) {
	in := newNode("spiffe://example.org/nhid/agent/join_token/abc")
	got := createNode(t, s, in)
	if got.Revision <= 0 || got.Revision != revision(t, s) {
		t.Errorf("node revision %d, store revision %d; want the same, positive", got.Revision, revision(t, s))
	}
	if diff := protoDiff(in, got, protocmp.IgnoreFields(in, "revision")); diff != "" {
		t.Errorf("CreateNode result (-want +got):\n%s", diff)
	}
	if diff := protoDiff(got, getNode(t, s, in.SpiffeId)); diff != "" {
		t.Errorf("stored node (-created +stored):\n%s", diff)
	}
	again := newNode(in.SpiffeId)
	again.AttestorType = "other"
	_, err := s.CreateNode(t.Context(), again)
	wantErrIs(t, err, store.ErrAlreadyExists, "second CreateNode")
	if diff := protoDiff(got, getNode(t, s, in.SpiffeId)); diff != "" {
		t.Errorf("a rejected CreateNode changed the node (-want +got):\n%s", diff)
	}
	_, err = s.GetNode(t.Context(), "spiffe://example.org/nhid/agent/join_token/none")
	wantErrIs(t, err, store.ErrNotFound, "GetNode of an unknown node")
}

func testUpdateNode(t *testing.T, s store.Store) {
	orig := createNode(t, s, newNode("spiffe://example.org/agent"))
	got, err := s.UpdateNode(t.Context(), orig.SpiffeId, func(n *typesv1.Node) error {
		if n.SvidSerial != "0a1b" {
			return fmt.Errorf("fn got serial %q, want the stored one", n.SvidSerial)
		}
		n.PreviousSvidSerial = n.SvidSerial
		n.SvidSerial = "0c0d"
		n.Status = typesv1.NodeStatus_NODE_STATUS_EVICTED
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateNode: %v", err)
	}
	want := proto.Clone(orig).(*typesv1.Node)
	want.PreviousSvidSerial, want.SvidSerial, want.Status = "0a1b", "0c0d", typesv1.NodeStatus_NODE_STATUS_EVICTED
	if diff := protoDiff(want, got, protocmp.IgnoreFields(want, "revision")); diff != "" {
		t.Errorf("UpdateNode result (-want +got):\n%s", diff)
	}
	if got.Revision <= orig.Revision || got.Revision != revision(t, s) {
		t.Errorf("revision after update %d (was %d, store at %d)", got.Revision, orig.Revision, revision(t, s))
	}
	if diff := protoDiff(got, getNode(t, s, orig.SpiffeId)); diff != "" {
		t.Errorf("stored node (-result +stored):\n%s", diff)
	}
}

func testUpdateNodeFnError(t *testing.T, s store.Store) {
	orig := createNode(t, s, newNode("spiffe://example.org/agent"))
	before := revision(t, s)
	errRefused := errors.New("refused by fn")
	_, err := s.UpdateNode(t.Context(), orig.SpiffeId, func(n *typesv1.Node) error {
		n.Status = typesv1.NodeStatus_NODE_STATUS_BANNED
		return errRefused
	})
	wantErrIs(t, err, errRefused, "UpdateNode whose fn fails")
	if diff := protoDiff(orig, getNode(t, s, orig.SpiffeId)); diff != "" {
		t.Errorf("the node changed (-want +got):\n%s", diff)
	}
	if after := revision(t, s); after != before {
		t.Errorf("revision moved from %d to %d", before, after)
	}
}

func testUpdateNodeNotFound(t *testing.T, s store.Store) {
	_, err := s.UpdateNode(t.Context(), "spiffe://example.org/none", func(*typesv1.Node) error { return nil })
	wantErrIs(t, err, store.ErrNotFound, "UpdateNode of an unknown node")
	if _, err := s.GetNode(t.Context(), "spiffe://example.org/none"); err == nil {
		t.Error("UpdateNode created the node")
	}
}

func testListNodes(t *testing.T, s store.Store) {
	var want []string
	for i := range 25 {
		id := fmt.Sprintf("spiffe://example.org/agent/%02d", (i*7)%25)
		createNode(t, s, newNode(id))
		want = append(want, id)
	}
	slices.Sort(want)
	var next string
	var all []string
	var sizes []int
	for range 100 {
		page, token, err := s.ListNodes(t.Context(), 10, next)
		if err != nil {
			t.Fatalf("ListNodes: %v", err)
		}
		for _, n := range page {
			all = append(all, n.SpiffeId)
		}
		sizes = append(sizes, len(page))
		if token == "" {
			break
		}
		next = token
	}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("paged node ids (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{10, 10, 5}, sizes); diff != "" {
		t.Errorf("page sizes (-want +got):\n%s", diff)
	}
	nodes, token, err := s.ListNodes(t.Context(), 0, "")
	if err != nil || token != "" || len(nodes) != 25 {
		t.Errorf("ListNodes(0) = %d nodes, token %q, %v; want all 25", len(nodes), token, err)
	}
	if n, err := s.CountNodes(t.Context()); err != nil || n != 25 {
		t.Errorf("CountNodes = %d, %v; want 25", n, err)
	}
}

func testDeleteNode(t *testing.T, s store.Store) {
	n := createNode(t, s, newNode("spiffe://example.org/agent"))
	createNode(t, s, newNode("spiffe://example.org/agent2"))
	before := revision(t, s)
	if err := s.DeleteNode(t.Context(), n.SpiffeId); err != nil {
		t.Fatalf("DeleteNode: %v", err)
	}
	if rev := revision(t, s); rev <= before {
		t.Errorf("delete left the revision at %d, want more than %d", rev, before)
	}
	_, err := s.GetNode(t.Context(), n.SpiffeId)
	wantErrIs(t, err, store.ErrNotFound, "GetNode after delete")
	wantErrIs(t, s.DeleteNode(t.Context(), n.SpiffeId), store.ErrNotFound, "second DeleteNode")
	if c, err := s.CountNodes(t.Context()); err != nil || c != 1 {
		t.Errorf("CountNodes = %d, %v; want 1", c, err)
	}
}
