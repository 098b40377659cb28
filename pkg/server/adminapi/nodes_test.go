package adminapi

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

const (
	statusActive  = typesv1.NodeStatus_NODE_STATUS_ACTIVE
	statusEvicted = typesv1.NodeStatus_NODE_STATUS_EVICTED
	statusBanned  = typesv1.NodeStatus_NODE_STATUS_BANNED
)

func (h *harness) seedNode(t *testing.T, id string, st typesv1.NodeStatus) *typesv1.Node {
	t.Helper()
	n, err := h.store.CreateNode(testCtx(t), &typesv1.Node{
		SpiffeId:     id,
		AttestorType: "join_token",
		Selectors:    []string{"join_token:id:" + id[len(id)-4:]},
		Status:       st,
		SvidSerial:   "01",
		AttestedAt:   testNow.Unix(),
	})
	if err != nil {
		t.Fatalf("CreateNode: %v", err)
	}
	return n
}

func TestListNodes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, err := h.nodes.ListNodes(testCtx(t), &adminv1.ListNodesRequest{})
	if err != nil {
		t.Fatalf("ListNodes on an empty store: %v", err)
	}
	if len(resp.GetNodes()) != 0 || resp.GetNextPageToken() != "" {
		t.Errorf("empty store listed %v", resp)
	}
	a := h.seedNode(t, agentA, statusActive)
	b := h.seedNode(t, agentB, statusActive)
	first, err := h.nodes.ListNodes(testCtx(t), &adminv1.ListNodesRequest{PageSize: 1})
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	second, err := h.nodes.ListNodes(testCtx(t), &adminv1.ListNodesRequest{PageSize: 1, PageToken: first.GetNextPageToken()})
	if err != nil {
		t.Fatalf("ListNodes page 2: %v", err)
	}
	got := append(first.GetNodes(), second.GetNodes()...)
	if diff := cmp.Diff([]*typesv1.Node{a, b}, got, protocmp.Transform()); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	_, err = h.nodes.ListNodes(testCtx(t), &adminv1.ListNodesRequest{PageSize: -3})
	requireCode(t, err, codes.InvalidArgument, "page_size")
}

func TestGetNode(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	want := h.seedNode(t, agentA, statusActive)
	resp, err := h.nodes.GetNode(testCtx(t), &adminv1.GetNodeRequest{SpiffeId: agentA})
	if err != nil {
		t.Fatalf("GetNode: %v", err)
	}
	if diff := cmp.Diff(want, resp.GetNode(), protocmp.Transform()); diff != "" {
		t.Errorf("node (-want +got):\n%s", diff)
	}
	_, err = h.nodes.GetNode(testCtx(t), &adminv1.GetNodeRequest{SpiffeId: agentB})
	requireCode(t, err, codes.NotFound)
}

func TestNodeStatusChanges(t *testing.T) {
	type call func(ctx context.Context, h *harness, id string) (*typesv1.Node, error)
	evict := func(ctx context.Context, h *harness, id string) (*typesv1.Node, error) {
		r, err := h.nodes.EvictNode(ctx, &adminv1.EvictNodeRequest{SpiffeId: id})
		return r.GetNode(), err
	}
	ban := func(ctx context.Context, h *harness, id string) (*typesv1.Node, error) {
		r, err := h.nodes.BanNode(ctx, &adminv1.BanNodeRequest{SpiffeId: id})
		return r.GetNode(), err
	}
	unban := func(ctx context.Context, h *harness, id string) (*typesv1.Node, error) {
		r, err := h.nodes.UnbanNode(ctx, &adminv1.UnbanNodeRequest{SpiffeId: id})
		return r.GetNode(), err
	}
	tests := []struct {
		name     string
		from     typesv1.NodeStatus
		call     call
		method   string
		wantCode codes.Code
		want     typesv1.NodeStatus // stored status afterwards
	}{
		{"evict an active node", statusActive, evict, "EvictNode", codes.OK, statusEvicted},
		{"evict an evicted node", statusEvicted, evict, "EvictNode", codes.OK, statusEvicted},
		{"evict a banned node is refused", statusBanned, evict, "EvictNode", codes.FailedPrecondition, statusBanned},
		{"ban an active node", statusActive, ban, "BanNode", codes.OK, statusBanned},
		{"ban an evicted node", statusEvicted, ban, "BanNode", codes.OK, statusBanned},
		{"unban a banned node leaves it evicted", statusBanned, unban, "UnbanNode", codes.OK, statusEvicted},
		{"unban an active node is refused", statusActive, unban, "UnbanNode", codes.FailedPrecondition, statusActive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			seeded := h.seedNode(t, agentA, tt.from)
			got, err := tt.call(testCtx(t), h, agentA)
			requireCode(t, err, tt.wantCode)
			stored, gerr := h.store.GetNode(testCtx(t), agentA)
			if gerr != nil {
				t.Fatalf("GetNode: %v", gerr)
			}
			if stored.GetStatus() != tt.want {
				t.Errorf("stored status = %v, want %v", stored.GetStatus(), tt.want)
			}
			audited := strings.Contains(h.logs.String(), `"method":"/nhid.admin.v1.NodeService/`+tt.method+`"`)
			if tt.wantCode != codes.OK {
				if stored.GetRevision() != seeded.GetRevision() || audited {
					t.Errorf("refused change was stored (revision %d -> %d) or audited (%v)", seeded.GetRevision(), stored.GetRevision(), audited)
				}
				return
			}
			if diff := cmp.Diff(stored, got, protocmp.Transform()); diff != "" {
				t.Errorf("response differs from the stored node (-stored +response):\n%s", diff)
			}
			if !audited || !strings.Contains(h.logs.String(), `"node_id":"`+agentA+`"`) {
				t.Errorf("change not audited with the node:\n%s", h.logs.String())
			}
		})
	}
}

func TestNodeRequests_BadOrUnknownIDs(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		id   string
		code codes.Code
	}{
		{"", codes.InvalidArgument},
		{"spiffe://example.org/", codes.InvalidArgument},
		{"spiffe://other.org/nhid/agent/join_token/x", codes.InvalidArgument},
		{"spiffe://example.org/workload", codes.InvalidArgument},
		{agentB, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			ctx := testCtx(t)
			_, err := h.nodes.GetNode(ctx, &adminv1.GetNodeRequest{SpiffeId: tt.id})
			requireCode(t, err, tt.code)
			_, err = h.nodes.EvictNode(ctx, &adminv1.EvictNodeRequest{SpiffeId: tt.id})
			requireCode(t, err, tt.code)
			_, err = h.nodes.BanNode(ctx, &adminv1.BanNodeRequest{SpiffeId: tt.id})
			requireCode(t, err, tt.code)
			_, err = h.nodes.UnbanNode(ctx, &adminv1.UnbanNodeRequest{SpiffeId: tt.id})
			requireCode(t, err, tt.code)
			if tt.code == codes.InvalidArgument {
				_, err = h.nodes.GetNode(ctx, &adminv1.GetNodeRequest{SpiffeId: tt.id})
				requireCode(t, err, tt.code, "spiffe_id")
			}
		})
	}
}
