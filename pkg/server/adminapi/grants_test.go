package adminapi

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/store/bolt"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// grantHarness serves the admin API with the grant and SVID services over
// a real bolt store, CA, policy engine and grant service.
type grantHarness struct {
	store  *bolt.Store
	grants *grant.Service
	client adminv1.GrantServiceClient
	svids  adminv1.SVIDServiceClient
}

func newGrantHarness(t *testing.T) *grantHarness {
	t.Helper()
	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	authority, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Dir: filepath.Join(dir, "ca"), Bundles: st, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	src := "version: 1\nrules:\n  - name: all\n    when: 'true'\n    effect: allow\n"
	if err := os.WriteFile(policyFile, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	engine, err := policy.New(policy.Config{Path: policyFile, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	gs, err := grant.New(grant.Config{TrustDomain: td, Store: st, Policy: engine, Signer: authority, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{TrustDomain: td, Store: st, Grants: gs, Ledger: st, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "admin.sock")
	lis, err := peercred.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	unary, stream := AuthorizePeer(nil, nil)
	srv := grpc.NewServer(grpc.Creds(peercred.TransportCredentials()), grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	svc.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn := dial(t, socket)
	return &grantHarness{store: st, grants: gs, client: adminv1.NewGrantServiceClient(conn), svids: adminv1.NewSVIDServiceClient(conn)}
}

// issue decides a grant for a workload entry with the given SPIFFE ID path.
func (h *grantHarness) issue(t *testing.T, path string) *typesv1.Grant {
	t.Helper()
	e := &typesv1.Entry{Id: "entry-" + path, SpiffeId: "spiffe://example.org/" + path, ParentId: agentA, Purpose: "ci", ScopeCeiling: []string{"repo:read"}}
	res, err := h.grants.Request(context.Background(), grant.Request{
		Entry: e, Node: &typesv1.Node{SpiffeId: agentA},
		Grant: &grantv1.GrantRequest{Scopes: []string{"repo:read"}, Reason: "test", Ttl: 60},
	})
	if err != nil || res.Grant.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE {
		t.Fatalf("issue grant: %v %v", res.Grant.GetStatus(), err)
	}
	return res.Grant
}

func TestGrantService_ListGetAndRevoke(t *testing.T) {
	h := newGrantHarness(t)
	ctx := testCtx(t)
	var ids []string
	for i := range 5 {
		ids = append([]string{h.issue(t, fmt.Sprintf("w%d", i%2)).GetId()}, ids...)
	}
	var listed []string
	req := &adminv1.ListGrantsRequest{PageSize: 2}
	for {
		resp, err := h.client.ListGrants(ctx, req)
		if err != nil {
			t.Fatalf("ListGrants: %v", err)
		}
		for _, g := range resp.GetGrants() {
			listed = append(listed, g.GetId())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if diff := cmp.Diff(ids, listed); diff != "" {
		t.Errorf("listed ids, newest first (-want +got):\n%s", diff)
	}
	w1, err := h.client.ListGrants(ctx, &adminv1.ListGrantsRequest{SpiffeId: "spiffe://example.org/w1"})
	if err != nil || len(w1.GetGrants()) != 2 {
		t.Errorf("ListGrants(w1) = %d grants, %v; want 2", len(w1.GetGrants()), err)
	}

	got, err := h.client.GetGrant(ctx, &adminv1.GetGrantRequest{Id: ids[0]})
	if err != nil || got.GetGrant().GetId() != ids[0] {
		t.Fatalf("GetGrant = %v, %v", got, err)
	}
	revoked, err := h.client.RevokeGrant(ctx, &adminv1.RevokeGrantRequest{Id: ids[0], Reason: "leaked in a log"})
	if err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	g := revoked.GetGrant()
	if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_REVOKED || g.GetDecisionReason() != "leaked in a log" || !strings.HasPrefix(g.GetEndedBy(), "unix:") || !strings.HasSuffix(g.GetEndedBy(), fmt.Sprintf("(%d)", uidOfTest())) {
		t.Errorf("revoked grant: %v, reason %q, ended by %q", g.GetStatus(), g.GetDecisionReason(), g.GetEndedBy())
	}
	active, err := h.client.ListGrants(ctx, &adminv1.ListGrantsRequest{Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE})
	if err != nil || len(active.GetGrants()) != 4 {
		t.Errorf("ListGrants(ACTIVE) after revoking one = %d, %v; want 4", len(active.GetGrants()), err)
	}
	_, err = h.client.RevokeGrant(ctx, &adminv1.RevokeGrantRequest{Id: ids[0], Reason: "again"})
	requireCode(t, err, codes.FailedPrecondition, "is revoked")
}

func TestGrantService_RefusesBadRequestsAndChangesNothing(t *testing.T) {
	h := newGrantHarness(t)
	g := h.issue(t, "w")
	ctx := testCtx(t)
	long := string(make([]byte, 300))
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"get without id", func() error { _, err := h.client.GetGrant(ctx, &adminv1.GetGrantRequest{}); return err }, codes.InvalidArgument, "id: required"},
		{"get of an unknown grant", func() error {
			_, err := h.client.GetGrant(ctx, &adminv1.GetGrantRequest{Id: "nope"})
			return err
		}, codes.NotFound, "nope"},
		{"revoke without a reason", func() error {
			_, err := h.client.RevokeGrant(ctx, &adminv1.RevokeGrantRequest{Id: g.GetId()})
			return err
		}, codes.InvalidArgument, "reason: required"},
		{"revoke with a long id", func() error {
			_, err := h.client.RevokeGrant(ctx, &adminv1.RevokeGrantRequest{Id: long, Reason: "x"})
			return err
		}, codes.InvalidArgument, "id: is 300 bytes"},
		{"list with a bad status", func() error {
			_, err := h.client.ListGrants(ctx, &adminv1.ListGrantsRequest{Status: 42})
			return err
		}, codes.InvalidArgument, "status: 42"},
		{"list with a bad page token", func() error {
			_, err := h.client.ListGrants(ctx, &adminv1.ListGrantsRequest{PageToken: "!!"})
			return err
		}, codes.InvalidArgument, "page_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireCode(t, tc.call(), tc.code, tc.msg)
		})
	}
	after, err := h.store.GetGrant(ctx, g.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(g, after, protocmp.Transform()); diff != "" {
		t.Errorf("refused calls changed the grant (-before +after):\n%s", diff)
	}
}

func TestSVIDService_AnswersFromTheLedger(t *testing.T) {
	h := newGrantHarness(t)
	ctx := testCtx(t)
	row := &typesv1.IssuedSVID{
		Id: "1a2b", Kind: typesv1.SVIDKind_SVID_KIND_X509, SpiffeId: "spiffe://example.org/w", EntryId: "e1",
		Node: agentA, Purpose: "builds", Owner: "ana@example.org",
		IssuedAt: testNow.Unix(), ExpiresAt: testNow.Add(time.Hour).Unix(),
	}
	if err := h.store.RecordIssued(ctx, []*typesv1.IssuedSVID{row}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"1a2b", "00:1A:2B", "001a2b"} {
		resp, err := h.svids.GetIssuedSVID(ctx, &adminv1.GetIssuedSVIDRequest{Id: id})
		if err != nil {
			t.Fatalf("GetIssuedSVID(%q): %v", id, err)
		}
		if diff := cmp.Diff(row, resp.GetSvid(), protocmp.Transform()); diff != "" {
			t.Errorf("GetIssuedSVID(%q) (-want +got):\n%s", id, diff)
		}
	}
	_, err := h.svids.GetIssuedSVID(ctx, &adminv1.GetIssuedSVIDRequest{Id: "ffff"})
	requireCode(t, err, codes.NotFound, "ffff")
	_, err = h.svids.GetIssuedSVID(ctx, &adminv1.GetIssuedSVIDRequest{})
	requireCode(t, err, codes.InvalidArgument, "id: required")
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
