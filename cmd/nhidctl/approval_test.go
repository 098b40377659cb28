package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/store/bolt"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// approvalPolicy sends deploys to one approver and payments to two.
const approvalPolicy = `version: 1
rules:
  - name: payments
    when: request.resource.startsWith("payments/")
    effect: require_approval
    critical: true
  - name: deploys
    when: "true"
    effect: require_approval
    reason: deploys need a person
`

// newApprovalServer is a real admin API with the approval service over a
// real bolt store, CA, policy engine and grant service. The test process
// is the approver: its uid is not among the entries' selectors.
func newApprovalServer(t *testing.T) *grantServer {
	t.Helper()
	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	log := slog.New(slog.DiscardHandler)
	authority, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Dir: filepath.Join(dir, "ca"), Bundles: st, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(approvalPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	engine, err := policy.New(policy.Config{Path: policyFile, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	gs, err := grant.New(grant.Config{TrustDomain: td, Store: st, Policy: engine, Signer: authority, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	s := serveAdmin(t, dir, st, adminapi.Config{Grants: gs, Approvals: gs, Log: log})
	return &grantServer{server: s, grants: gs}
}

// request asks for a grant on resource for an entry selecting sel.
func (s *grantServer) request(t *testing.T, resource, sel string) *typesv1.Grant {
	t.Helper()
	e := &typesv1.Entry{Id: "entry-1", SpiffeId: "spiffe://example.org/ci/builder", ParentId: agentA, Selectors: []string{sel},
		Purpose: "ci", Owner: "ana@example.org", ScopeCeiling: []string{"repo:read", "repo:write"}}
	if _, errs, err := s.store.CreateEntries(context.Background(), []*typesv1.Entry{e}); err != nil || errs[0] != nil && !strings.Contains(errs[0].Error(), "exists") {
		t.Fatalf("store entry: %v %v", err, errs)
	}
	res, err := s.grants.Request(context.Background(), grant.Request{
		Entry: e, Node: &typesv1.Node{SpiffeId: agentA},
		Grant: &grantv1.GrantRequest{Scopes: []string{"repo:read"}, Resource: resource, Action: "push", Reason: "release 1.2", Ttl: 600},
	})
	if err != nil {
		t.Fatal(err)
	}
	return res.Grant
}

func TestApprovalList_ShowsPendingGrantsOldestFirst(t *testing.T) {
	s := newApprovalServer(t)
	if out := s.mustRun(t, "approval", "list"); strings.TrimSpace(out) != "no grants wait for approval" {
		t.Errorf("approval list on an empty store = %q", out)
	}
	if out := s.mustRun(t, "-o", "json", "approval", "list"); !strings.Contains(out, `"grants": []`) {
		t.Errorf("approval list -o json on an empty store = %s", out)
	}
	first := s.request(t, "repo/nhid", "unix:uid:4242")
	second := s.request(t, "payments/march", "unix:uid:4242")
	table := s.mustRun(t, "approval", "list")
	for _, want := range []string{"APPROVALS", "DEADLINE", first.GetId(), "repo/nhid/push", "0/1", "0/2 (critical)", "release 1.2", "ana@example.org"} {
		if !strings.Contains(table, want) {
			t.Errorf("approval list lacks %q:\n%s", want, table)
		}
	}
	listed := decode(t, s.mustRun(t, "-o", "json", "approval", "list"), &adminv1.ListApprovalsResponse{})
	if len(listed.GetGrants()) != 2 || listed.GetGrants()[0].GetId() != first.GetId() || listed.GetGrants()[1].GetId() != second.GetId() {
		t.Errorf("approval list -o json: %v", listed.GetGrants())
	}
}

func TestApprovalApproveAndDeny(t *testing.T) {
	s := newApprovalServer(t)
	g := s.request(t, "repo/nhid", "unix:uid:4242")
	out := s.mustRun(t, "approval", "approve", g.GetId(), "--reason", "looks fine")
	me := fmt.Sprintf("(%d)", os.Getuid())
	for _, want := range []string{"approved: active until", "Decision 1:", me + " approved", "looks fine"} {
		if !strings.Contains(out, want) {
			t.Errorf("approval approve lacks %q:\n%s", want, out)
		}
	}
	if r := s.run(t, "approval", "approve", g.GetId()); r.code != 1 || !strings.Contains(r.stderr, "is active: grant is not waiting for approval") {
		t.Errorf("approving an active grant: exit %d, stderr %q", r.code, r.stderr)
	}

	two := s.request(t, "payments/march", "unix:uid:4242")
	resp := decode(t, s.mustRun(t, "-o", "json", "approval", "approve", two.GetId()), &adminv1.ApproveResponse{})
	if st := resp.GetGrant().GetStatus(); st != typesv1.GrantStatus_GRANT_STATUS_PENDING {
		t.Errorf("critical grant after one approval: %v, want PENDING", st)
	}
	if r := s.run(t, "approval", "approve", two.GetId()); r.code != 1 || !strings.Contains(r.stderr, "has already approved") {
		t.Errorf("second approval by the same person: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := s.run(t, "approval", "deny", two.GetId()); r.code != 2 || !strings.Contains(r.stderr, "--reason is required") {
		t.Errorf("deny without --reason: exit %d, stderr %q", r.code, r.stderr)
	}
	out = s.mustRun(t, "approval", "deny", two.GetId(), "--reason", "not this month")
	if !strings.Contains(out, "denied: not this month") {
		t.Errorf("approval deny printed:\n%s", out)
	}
	if r := s.run(t, "approval", "approve", "no-such-grant"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("unknown grant: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestApprovalApprove_OwnRequestIsPermissionDenied(t *testing.T) {
	s := newApprovalServer(t)
	g := s.request(t, "repo/nhid", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	r := s.run(t, "approval", "approve", g.GetId())
	if r.code != 1 || !strings.Contains(r.stderr, "is the subject") || !strings.Contains(r.stderr, "nobody decides their own request") {
		t.Errorf("approving one's own request: exit %d, stderr %q", r.code, r.stderr)
	}
}
