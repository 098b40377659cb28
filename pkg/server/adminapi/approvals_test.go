package adminapi

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/store/bolt"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// approvalHarness serves the approval service over a real bolt store, CA,
// policy engine and grant service; the test process is the approver.
type approvalHarness struct {
	store  *bolt.Store
	grants *grant.Service
	client adminv1.ApprovalServiceClient
	audit  *recorder
}

func newApprovalHarness(t *testing.T) *approvalHarness {
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
	src := "version: 1\nrules:\n  - name: two\n    when: request.resource == 'critical'\n    effect: require_approval\n    critical: true\n" +
		"  - name: one\n    when: 'true'\n    effect: require_approval\n"
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
	rec := &recorder{}
	svc, err := New(Config{TrustDomain: td, Store: st, Grants: gs, Approvals: gs, Audit: rec, Log: discardLog()})
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
	return &approvalHarness{store: st, grants: gs, client: adminv1.NewApprovalServiceClient(dial(t, socket)), audit: rec}
}

// pending stores an entry selecting sel, owned by path's owner, and a
// grant of it waiting for approval on resource.
func (h *approvalHarness) pending(t *testing.T, path, sel, resource string) *typesv1.Grant {
	t.Helper()
	e := &typesv1.Entry{Id: "entry-" + path, SpiffeId: "spiffe://example.org/" + path, ParentId: agentA, Selectors: []string{sel},
		Purpose: "ci", Owner: path + "@example.org", ScopeCeiling: []string{"repo:read"}}
	if _, errs, err := h.store.CreateEntries(context.Background(), []*typesv1.Entry{e}); err != nil || errs[0] != nil {
		t.Fatalf("store entry: %v %v", err, errs)
	}
	res, err := h.grants.Request(context.Background(), grant.Request{
		Entry: e, Node: &typesv1.Node{SpiffeId: agentA},
		Grant: &grantv1.GrantRequest{Scopes: []string{"repo:read"}, Resource: resource, Reason: "test", Ttl: 60},
	})
	if err != nil || res.Grant.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING {
		t.Fatalf("request grant: %v %v", res.Grant.GetStatus(), err)
	}
	return res.Grant
}

func TestApprovalService_ApproveRecordsTheCallerAsApprover(t *testing.T) {
	h := newApprovalHarness(t)
	ctx := testCtx(t)
	g := h.pending(t, "w1", "unix:uid:4242", "repo")
	list, err := h.client.ListApprovals(ctx, &adminv1.ListApprovalsRequest{})
	if err != nil || len(list.GetGrants()) != 1 || list.GetGrants()[0].GetId() != g.GetId() {
		t.Fatalf("ListApprovals = %v, %v", list.GetGrants(), err)
	}
	resp, err := h.client.Approve(ctx, &adminv1.ApproveRequest{Id: g.GetId(), Reason: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(os.Getuid())
	got := resp.GetGrant()
	if got.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE || len(got.GetApprovals()) != 1 ||
		!strings.HasPrefix(got.GetApprovals()[0].GetApprover(), "unix:") || !strings.HasSuffix(got.GetApprovals()[0].GetApprover(), "("+uid+")") {
		t.Fatalf("approved grant: %v, approvals %v", got.GetStatus(), got.GetApprovals())
	}
	if list, _ := h.client.ListApprovals(ctx, &adminv1.ListApprovalsRequest{}); len(list.GetGrants()) != 0 {
		t.Errorf("an approved grant is still listed")
	}
	evs := h.audit.all()
	if len(evs) != 1 || evs[0].Action != audit.ActionAdminPrefix+actionApprovalApprove || evs[0].Target != g.GetId() || evs[0].Outcome != audit.OutcomeSuccess {
		t.Errorf("admin audit records: %+v", evs)
	}
}

func TestApprovalService_ErrorsAreMappedToCodes(t *testing.T) {
	h := newApprovalHarness(t)
	ctx := testCtx(t)
	own := h.pending(t, "mine", "unix:uid:"+strconv.Itoa(os.Getuid()), "repo")
	critical := h.pending(t, "w2", "unix:uid:4242", "critical")
	if _, err := h.client.Approve(ctx, &adminv1.ApproveRequest{Id: critical.GetId()}); err != nil {
		t.Fatal(err)
	}
	decided := h.pending(t, "w3", "unix:uid:4242", "repo")
	if _, err := h.client.Deny(ctx, &adminv1.DenyRequest{Id: decided.GetId(), Reason: "no"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"own request", func() error {
			_, err := h.client.Approve(ctx, &adminv1.ApproveRequest{Id: own.GetId()})
			return err
		}, codes.PermissionDenied, "nobody decides their own request"},
		{"same approver twice", func() error {
			_, err := h.client.Approve(ctx, &adminv1.ApproveRequest{Id: critical.GetId()})
			return err
		}, codes.AlreadyExists, "already approved"},
		{"decided grant", func() error {
			_, err := h.client.Approve(ctx, &adminv1.ApproveRequest{Id: decided.GetId()})
			return err
		}, codes.FailedPrecondition, "is denied"},
		{"deny without a reason", func() error {
			_, err := h.client.Deny(ctx, &adminv1.DenyRequest{Id: critical.GetId()})
			return err
		}, codes.InvalidArgument, "reason"},
		{"no id", func() error {
			_, err := h.client.Approve(ctx, &adminv1.ApproveRequest{})
			return err
		}, codes.InvalidArgument, "id: required"},
		{"unknown grant", func() error {
			_, err := h.client.Deny(ctx, &adminv1.DenyRequest{Id: "unknown", Reason: "x"})
			return err
		}, codes.NotFound, "not found"},
		{"bad page token", func() error {
			_, err := h.client.ListApprovals(ctx, &adminv1.ListApprovalsRequest{PageToken: "x"})
			return err
		}, codes.InvalidArgument, "page_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireCode(t, tt.call(), tt.code, tt.msg)
		})
	}
	var refused int
	for _, ev := range h.audit.all() {
		if ev.Target == own.GetId() && ev.Outcome == audit.OutcomeDenied {
			refused++
		}
	}
	if refused != 1 {
		t.Errorf("the refused self-approval was recorded %d times as denied, want once", refused)
	}
}
