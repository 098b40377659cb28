package grants

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestRelease_ForwardsTheCallersEntries(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.identities.set(identity("e1", "spiffe://example.org/a"), identity("e2", "spiffe://example.org/b"))
	if _, err := h.client.Release(workloadCtx(t), &grantv1.ReleaseRequest{GrantId: "g1"}); err != nil {
		t.Fatalf("Release: %v", err)
	}
	want := []*agentv1.AgentReleaseGrantRequest{{EntryIds: []string{"e1", "e2"}, GrantId: "g1"}}
	if diff := cmp.Diff(want, h.up.gotReleases(), protocmp.Transform()); diff != "" {
		t.Fatalf("forwarded releases (-want +got):\n%s", diff)
	}
}

func TestRelease_Refusals(t *testing.T) {
	tests := []struct {
		name     string
		grantID  string
		upErr    error
		wantCode codes.Code
		wantMsg  string
		forwards bool
	}{
		{name: "no grant id", wantCode: codes.InvalidArgument, wantMsg: "grant_id: required"},
		{name: "oversized grant id", grantID: strings.Repeat("g", 129), wantCode: codes.InvalidArgument, wantMsg: "grant_id: 129 bytes, at most 128 allowed"},
		{name: "grant id with a newline", grantID: "g1\nforged log line", wantCode: codes.InvalidArgument, wantMsg: "grant_id: contains spaces or control characters"},
		{name: "not the caller's grant", grantID: "g9", upErr: status.Error(codes.NotFound, "grant g9: not found"), wantCode: codes.NotFound, wantMsg: "grant g9: not found", forwards: true},
		{name: "server down", grantID: "g1", upErr: status.Error(codes.Unavailable, "connection refused"), wantCode: codes.Unavailable, wantMsg: "nhid-server cannot be reached; retry later", forwards: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			h.up.onRelease(func(*agentv1.AgentReleaseGrantRequest) error { return tt.upErr })
			_, err := h.client.Release(workloadCtx(t), &grantv1.ReleaseRequest{GrantId: tt.grantID})
			st := status.Convert(err)
			if diff := cmp.Diff([]any{tt.wantCode, tt.wantMsg, tt.forwards}, []any{st.Code(), st.Message(), len(h.up.gotReleases()) == 1}); diff != "" {
				t.Fatalf("code, message, forwarded (-want +got):\n%s", diff)
			}
		})
	}
}

func TestList_ReturnsOnlyActiveUnexpiredGrants(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.identities.set(identity("e1", "spiffe://example.org/a"), identity("e2", "spiffe://example.org/b"))
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
	h.up.onList(func(*agentv1.AgentListGrantsRequest) (*agentv1.AgentListGrantsResponse, error) {
		return &agentv1.AgentListGrantsResponse{Grants: []*typesv1.Grant{
			{Id: "g1", SpiffeId: "spiffe://example.org/a", EntryId: "e1", Scopes: []string{"deploy:staging"}, Resource: "app/web", Action: "deploy", Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE, ExpiresAt: future},
			{Id: "g2", SpiffeId: "spiffe://example.org/a", EntryId: "e1", Status: typesv1.GrantStatus_GRANT_STATUS_REVOKED, ExpiresAt: future},
			{Id: "g3", SpiffeId: "spiffe://example.org/b", EntryId: "e2", Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE, ExpiresAt: past},
			{Id: "g4", SpiffeId: "spiffe://example.org/b", EntryId: "e2", Status: typesv1.GrantStatus_GRANT_STATUS_PENDING},
		}}, nil
	})
	resp, err := h.client.List(workloadCtx(t), &grantv1.ListRequest{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := &grantv1.ListResponse{Grants: []*grantv1.GrantInfo{{
		GrantId: "g1", SpiffeId: "spiffe://example.org/a", Scopes: []string{"deploy:staging"}, Resource: "app/web", Action: "deploy", ExpiresAt: future,
	}}}
	if diff := cmp.Diff(want, resp, protocmp.Transform()); diff != "" {
		t.Fatalf("List (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"e1", "e2"}, h.up.gotLists()[0].GetEntryIds()); diff != "" {
		t.Fatalf("forwarded entry ids (-want +got):\n%s", diff)
	}
}

func TestList_SPIFFEIDNarrowsToThatIdentity(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.identities.set(identity("e1", "spiffe://example.org/a"), identity("e2", "spiffe://example.org/b"))
	if _, err := h.client.List(workloadCtx(t), &grantv1.ListRequest{SpiffeId: "spiffe://example.org/b"}); err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff([]string{"e2"}, h.up.gotLists()[0].GetEntryIds()); diff != "" {
		t.Fatalf("forwarded entry ids (-want +got):\n%s", diff)
	}
	_, err := h.client.List(workloadCtx(t), &grantv1.ListRequest{SpiffeId: "spiffe://example.org/c"})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied {
		t.Fatalf("List for another SPIFFE ID: %s %q, want PermissionDenied", st.Code(), st.Message())
	}
	_, err = h.client.List(workloadCtx(t), &grantv1.ListRequest{SpiffeId: "spiffe://example.org/" + strings.Repeat("x", 2048)})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || len(st.Message()) > 100 {
		t.Fatalf("List for an oversized SPIFFE ID: %s %q, want a short InvalidArgument", st.Code(), st.Message())
	}
	if len(h.up.gotLists()) != 1 {
		t.Fatalf("the refused Lists reached the server")
	}
}
