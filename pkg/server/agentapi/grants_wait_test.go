package agentapi

import (
	"context"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/grant"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// approver is a person unrelated to the test entries (uid 1000).
var approver = grant.Principal{Name: "unix:olga(4242)", UID: 4242, User: "olga"}

// pendingGrant requests a grant that waits for approval and abandons the
// stream after PENDING_APPROVAL, as a broken connection would.
func (h *grantHarness) pendingGrant(c agentv1.AgentGrantServiceClient, entryID string) *grantv1.GrantStatus {
	h.t.Helper()
	r := grantRequest("deploy")
	r.Resource = "prod/payments"
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := c.RequestGrant(ctx, &agentv1.AgentGrantRequest{EntryId: entryID, Request: r})
	if err != nil {
		h.t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetState() != grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL {
		h.t.Fatalf("first status %v, %v; want PENDING_APPROVAL", first, err)
	}
	return first
}

func TestWaitGrant_ResumesThePendingWaitUntilTheApproval(t *testing.T) {
	h := newGrantHarness(t)
	a := h.attest()
	e := h.createEntries(ciEntry("ci/deployer", a.id.String()))[0]
	client := h.grantClient(a.svid)
	first := h.pendingGrant(client, e.GetId())
	g, err := h.grants.Get(context.Background(), first.GetGrantId())
	if err != nil {
		t.Fatal(err)
	}
	if first.GetExpiresAt() != g.GetApprovalDeadline() || first.GetExpiresAt() == 0 {
		t.Errorf("PENDING_APPROVAL expires_at %d, want the approval deadline %d", first.GetExpiresAt(), g.GetApprovalDeadline())
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := client.WaitGrant(ctx, &agentv1.AgentWaitGrantRequest{EntryIds: []string{e.GetId()}, GrantId: first.GetGrantId()})
	if err != nil {
		t.Fatal(err)
	}
	resumed, err := stream.Recv()
	if err != nil || resumed.GetState() != grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL || resumed.GetGrantId() != first.GetGrantId() {
		t.Fatalf("resumed status %v, %v; want PENDING_APPROVAL of the same grant", resumed, err)
	}
	if _, err := h.grants.Approve(ctx, first.GetGrantId(), approver, "ok"); err != nil {
		t.Fatal(err)
	}
	last, err := stream.Recv()
	if err != nil || last.GetState() != grantv1.GrantState_GRANT_STATE_GRANTED || last.GetToken() == "" {
		t.Fatalf("after the approval: %v, %v; want GRANTED with a token", last, err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("after GRANTED the stream ended with %v, want EOF", err)
	}
}

func TestWaitGrant_ADecidedGrantGetsItsOutcomeAtOnce(t *testing.T) {
	h := newGrantHarness(t)
	a := h.attest()
	e := h.createEntries(ciEntry("ci/deployer", a.id.String()))[0]
	client := h.grantClient(a.svid)
	first := h.pendingGrant(client, e.GetId())
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := h.grants.Deny(ctx, first.GetGrantId(), approver, "not in the freeze"); err != nil {
		t.Fatal(err)
	}
	stream, err := client.WaitGrant(ctx, &agentv1.AgentWaitGrantRequest{EntryIds: []string{e.GetId()}, GrantId: first.GetGrantId()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := stream.Recv()
	if err != nil || st.GetState() != grantv1.GrantState_GRANT_STATE_DENIED || st.GetReason() != "not in the freeze" {
		t.Fatalf("status %v, %v; want DENIED with the approver's reason", st, err)
	}
}

func TestWaitGrant_IsScopedToTheCallersEntries(t *testing.T) {
	h := newGrantHarness(t)
	a, b := h.attest(), h.attest()
	mine := h.createEntries(ciEntry("ci/mine", a.id.String()), ciEntry("ci/sibling", a.id.String()))
	theirs := h.createEntries(ciEntry("ci/theirs", b.id.String()))[0]
	client := h.grantClient(a.svid)
	g := h.pendingGrant(client, mine[0].GetId())
	wait := func(entryIDs []string, id string) error {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		stream, err := client.WaitGrant(ctx, &agentv1.AgentWaitGrantRequest{EntryIds: entryIDs, GrantId: id})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	tests := []struct {
		name     string
		entryIDs []string
		id       string
		code     codes.Code
		msg      string
	}{
		{"no grant id", []string{mine[0].GetId()}, "", codes.InvalidArgument, "grant_id: required"},
		{"no entry ids", nil, g.GetGrantId(), codes.InvalidArgument, "entry_ids"},
		{"another node's entry", []string{theirs.GetId()}, g.GetGrantId(), codes.PermissionDenied, "is not authorised for this node"},
		{"another entry's grant", []string{mine[1].GetId()}, g.GetGrantId(), codes.NotFound, "grant not found"},
		{"unknown grant", []string{mine[0].GetId()}, "unknown", codes.NotFound, "grant not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, wait(tt.entryIDs, tt.id), tt.code, tt.msg)
		})
	}
}
