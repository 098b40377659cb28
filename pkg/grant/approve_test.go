package grant

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Approvers of the tests. The harness's entry selects unix:uid:1000.
var (
	bob   = Principal{Name: "unix:bob(2000)", UID: 2000, User: "bob"}
	carol = Principal{Name: "unix:carol(2001)", UID: 2001, User: "carol"}
	ana   = Principal{Name: "unix:ana(1000)", UID: 1000, User: "ana"}
)

// critical stores a grant that needs two approvals.
func (h *harness) critical() *typesv1.Grant {
	h.t.Helper()
	r := request("deploy")
	r.Resource = "critical/payments"
	g := h.mustRequest(r).Grant
	if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING || g.GetApprovalsRequired() != 2 || !g.GetCritical() {
		h.t.Fatalf("critical request: %v, approvals required %d, critical %v", g.GetStatus(), g.GetApprovalsRequired(), g.GetCritical())
	}
	return g
}

func TestApprove_ActivatesForItsTTLFromNowAndTheWaitGetsTheToken(t *testing.T) {
	rec := &recorders{}
	h := newHarness(t, withRecorders(rec))
	h.svc.recheck = time.Hour // only the approval can end the wait
	h.run()
	h.storeEntries()
	g := h.pending()
	done := h.wait(g.GetId())
	h.clock.Add(3 * time.Minute)
	approvedAt := h.clock.Now()

	got, err := h.svc.Approve(context.Background(), g.GetId(), bob, "release train 12")
	if err != nil {
		t.Fatalf("Approve: %v", err)
	}
	want := &typesv1.Grant{
		Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE, DecidedAt: approvedAt.Unix(),
		ExpiresAt: approvedAt.Add(10 * time.Minute).Unix(), DecisionReason: "approved by unix:bob(2000)",
		Approvals: []*typesv1.Approval{{Approver: bob.Name, Approved: true, Reason: "release train 12", At: approvedAt.Unix()}},
	}
	if diff := cmp.Diff(want, &typesv1.Grant{Status: got.Status, DecidedAt: got.DecidedAt, ExpiresAt: got.ExpiresAt,
		DecisionReason: got.DecisionReason, Approvals: got.Approvals}, protocmp.Transform()); diff != "" {
		t.Errorf("approved grant (-want +got):\n%s", diff)
	}
	select {
	case res := <-done:
		_, claims := h.verify(res.Token)
		if res.Grant.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE || claims["exp"] != float64(want.ExpiresAt) {
			t.Errorf("wait ended with %v, token exp %v; want ACTIVE until %d", res.Grant.GetStatus(), claims["exp"], want.ExpiresAt)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the wait did not end after the approval")
	}
	evs := rec.audited(audit.ActionApprovalDecide)
	if len(evs) != 1 || evs[0].Actor != bob.Name || evs[0].OnBehalfOf != "ana@example.org" || evs[0].Target != g.GetId() ||
		evs[0].Outcome != audit.OutcomeSuccess || evs[0].Details["status"] != "active" {
		t.Errorf("approval audit records: %+v", evs)
	}
	if _, err := h.svc.Approve(context.Background(), g.GetId(), carol, ""); !errors.Is(err, ErrNotPending) {
		t.Errorf("approving an active grant = %v, want ErrNotPending", err)
	}
}

func TestApprove_CriticalGrantNeedsTwoDistinctApprovers(t *testing.T) {
	h := newHarness(t)
	h.storeEntries()
	ctx := context.Background()
	g := h.critical()
	first, err := h.svc.Approve(ctx, g.GetId(), bob, "")
	if err != nil {
		t.Fatal(err)
	}
	if first.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING || len(first.GetApprovals()) != 1 || first.GetExpiresAt() != 0 {
		t.Fatalf("after one approval: %v with %d approvals, expires %d; want still PENDING", first.GetStatus(), len(first.GetApprovals()), first.GetExpiresAt())
	}
	if _, err := h.svc.Approve(ctx, g.GetId(), bob, "again"); !errors.Is(err, ErrAlreadyApproved) {
		t.Fatalf("the same approver twice = %v, want ErrAlreadyApproved", err)
	}
	second, err := h.svc.Approve(ctx, g.GetId(), carol, "")
	if err != nil {
		t.Fatal(err)
	}
	if second.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE || second.GetDecisionReason() != "approved by unix:bob(2000) and unix:carol(2001)" {
		t.Errorf("after two approvals: %v %q, want ACTIVE approved by both", second.GetStatus(), second.GetDecisionReason())
	}
}

func TestDeny_EndsTheWaitWithTheApproversReason(t *testing.T) {
	rec := &recorders{}
	h := newHarness(t, withRecorders(rec))
	h.svc.recheck = time.Hour
	h.run()
	h.storeEntries()
	ctx := context.Background()
	g := h.critical()
	if _, err := h.svc.Approve(ctx, g.GetId(), bob, ""); err != nil {
		t.Fatal(err)
	}
	done := h.wait(g.GetId())
	if _, err := h.svc.Deny(ctx, g.GetId(), carol, ""); !errors.Is(err, grantreq.ErrInvalidRequest) || !strings.Contains(err.Error(), "reason") {
		t.Fatalf("deny without a reason = %v, want ErrInvalidRequest naming reason", err)
	}
	// Someone who approved may still reject.
	got, err := h.svc.Deny(ctx, g.GetId(), bob, "not during the freeze")
	if err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now().Unix()
	if got.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_DENIED || got.GetDecisionReason() != "not during the freeze" ||
		got.GetEndedBy() != bob.Name || got.GetEndedAt() != now || len(got.GetScopes()) != 0 {
		t.Errorf("denied grant: %v %q by %q at %d, scopes %v", got.GetStatus(), got.GetDecisionReason(), got.GetEndedBy(), got.GetEndedAt(), got.GetScopes())
	}
	select {
	case res := <-done:
		if res.Grant.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_DENIED || res.Grant.GetDecisionReason() != "not during the freeze" || res.Token != "" {
			t.Errorf("wait ended with %v %q", res.Grant.GetStatus(), res.Grant.GetDecisionReason())
		}
	case <-time.After(waitTimeout):
		t.Fatal("the wait did not end after the denial")
	}
	evs := rec.audited(audit.ActionApprovalDecide)
	if len(evs) != 2 || evs[1].Outcome != audit.OutcomeDenied || evs[1].Reason != "not during the freeze" || evs[1].Details["approved"] != false {
		t.Errorf("approval audit records: %+v", evs)
	}
	if _, err := h.svc.Approve(ctx, g.GetId(), carol, ""); !errors.Is(err, ErrNotPending) || !strings.Contains(err.Error(), "is denied") {
		t.Errorf("approving a denied grant = %v, want ErrNotPending saying it is denied", err)
	}
}

func TestApprove_NobodyDecidesTheirOwnRequest(t *testing.T) {
	h := newHarness(t)
	h.storeEntries(
		// Another entry of the subject's SPIFFE ID, on another uid.
		&typesv1.Entry{Id: "twin", SpiffeId: workloadID, ParentId: agentID, Selectors: []string{"unix:uid:3000"}, Owner: "ops@example.org"},
		// An agent of the same owner, selected by user name.
		&typesv1.Entry{Id: "ana-bot", SpiffeId: "spiffe://example.org/ana/bot", ParentId: agentID,
			Selectors: []string{"unix:user:anabot", "unix:gid:5"}, Owner: "ana@example.org"},
		// Someone else's workload on bob's uid does not make bob a party.
		&typesv1.Entry{Id: "other", SpiffeId: "spiffe://example.org/other", ParentId: agentID,
			Selectors: []string{"unix:uid:2000"}, Owner: "olga@example.org"},
		// An admin console of another owner, but on the subject's uid and node.
		&typesv1.Entry{Id: "shared-console", SpiffeId: "spiffe://example.org/ops/shared-console", ParentId: agentID,
			Selectors: []string{"unix:uid:1000", "unix:sha256:abc"}, Owner: "olga@example.org", Admin: true},
	)
	g := h.pending()
	tests := []struct {
		name string
		by   Principal
		want string
	}{
		{"the subject's uid", ana, "is the subject"},
		{"the subject's uid without a user name", Principal{Name: "unix:1000(1000)", UID: 1000}, "is the subject"},
		{"another entry of the subject", Principal{Name: "unix:twin(3000)", UID: 3000}, "entry twin selects unix:uid:3000"},
		{"an agent of the same owner", Principal{Name: "unix:anabot(4000)", UID: 4000, User: "anabot"}, "an agent of the same owner"},
		// Over mTLS the approver is its SPIFFE ID.
		{"the subject's SVID", Principal{Name: workloadID, SPIFFEID: workloadID}, "is the subject"},
		{"the SVID of an agent of the same owner", Principal{Name: "spiffe://example.org/ana/bot", SPIFFEID: "spiffe://example.org/ana/bot"},
			"an agent of the same owner ana@example.org (entry ana-bot)"},
		// Every process of uid 1000 on the subject's node holds this SVID
		// too, the requesting workload included.
		{"an SVID handed to the subject's uid on its node", Principal{Name: "spiffe://example.org/ops/shared-console", SPIFFEID: "spiffe://example.org/ops/shared-console"},
			"is handed to the subject's processes too"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, decide := range []func(context.Context, string, Principal, string) (*typesv1.Grant, error){h.svc.Approve, h.svc.Deny} {
				_, err := decide(context.Background(), g.GetId(), tt.by, "mine")
				if !errors.Is(err, ErrSelfApproval) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("decision by %s = %v, want ErrSelfApproval saying %q", tt.by.Name, err, tt.want)
				}
			}
		})
	}
	stored, err := h.store.GetGrant(context.Background(), g.GetId())
	if err != nil || stored.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING || len(stored.GetApprovals()) != 0 {
		t.Fatalf("refused decisions changed the grant: %v, %v", stored, err)
	}
	if got, err := h.svc.Approve(context.Background(), g.GetId(), bob, ""); err != nil || got.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE {
		t.Errorf("approval by bob = %v, %v; want ACTIVE", got.GetStatus(), err)
	}
}

func TestApprove_ByAnSVIDOfSomeoneElseIsRecordedByItsSPIFFEID(t *testing.T) {
	h := newHarness(t)
	// olga's console holds an SVID whose entry has another owner and
	// selects uid 1000 on her own laptop: the same uid number as the
	// subject's, on another node, is another person.
	olga := "spiffe://example.org/ops/olga-console"
	h.storeEntries(&typesv1.Entry{Id: "console", SpiffeId: olga, ParentId: "spiffe://example.org/nhid/agent/join_token/olga-laptop",
		Selectors: []string{"unix:uid:1000"}, Owner: "olga@example.org", Admin: true})
	g := h.pending()
	got, err := h.svc.Approve(context.Background(), g.GetId(), Principal{Name: olga, SPIFFEID: olga}, "reviewed")
	if err != nil || got.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE {
		t.Fatalf("approval by %s = %v, %v; want ACTIVE", olga, got.GetStatus(), err)
	}
	if len(got.GetApprovals()) != 1 || got.GetApprovals()[0].GetApprover() != olga {
		t.Errorf("approvals %v, want one by %s", got.GetApprovals(), olga)
	}
}

func TestApprove_WithoutAnEntryStoreIsRefused(t *testing.T) {
	h := newHarness(t)
	h.svc.entries = nil
	g := h.pending()
	if _, err := h.svc.Approve(context.Background(), g.GetId(), bob, ""); err == nil || errors.Is(err, ErrSelfApproval) {
		t.Errorf("Approve without an entry store = %v, want a failure", err)
	}
}

func TestApprove_AfterTheDeadlineIsNotPending(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ApprovalTimeout = 2 * time.Minute })
	h.storeEntries()
	g := h.pending()
	if g.GetApprovalDeadline() != h.clock.Now().Add(2*time.Minute).Unix() {
		t.Fatalf("approval deadline %d, want now + 2m", g.GetApprovalDeadline())
	}
	h.clock.Add(2 * time.Minute)
	_, err := h.svc.Approve(context.Background(), g.GetId(), bob, "")
	if !errors.Is(err, ErrNotPending) || !strings.Contains(err.Error(), "is denied") {
		t.Fatalf("late approval = %v, want ErrNotPending", err)
	}
	stored, _ := h.store.GetGrant(context.Background(), g.GetId())
	if stored.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_DENIED || stored.GetDecisionReason() != reasonTimedOut || stored.GetEndedAt() != g.GetApprovalDeadline() {
		t.Errorf("timed-out grant stored as %v %q ended %d", stored.GetStatus(), stored.GetDecisionReason(), stored.GetEndedAt())
	}
}

func TestApprove_BadInputIsRefused(t *testing.T) {
	h := newHarness(t)
	h.storeEntries()
	g := h.pending()
	ctx := context.Background()
	if _, err := h.svc.Approve(ctx, g.GetId(), Principal{UID: 2000}, ""); !errors.Is(err, grantreq.ErrInvalidRequest) {
		t.Errorf("approver without a name = %v, want ErrInvalidRequest", err)
	}
	if _, err := h.svc.Approve(ctx, g.GetId(), bob, strings.Repeat("r", MaxApprovalReasonBytes+1)); !errors.Is(err, grantreq.ErrInvalidRequest) {
		t.Errorf("oversized reason = %v, want ErrInvalidRequest", err)
	}
	if _, err := h.svc.Approve(ctx, "unknown", bob, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown grant = %v, want ErrNotFound", err)
	}
}

func TestRequest_PendingGrantNotifiesTheOwnerWithoutAToken(t *testing.T) {
	rec := &recorders{}
	h := newHarness(t, withRecorders(rec))
	g := h.pending()
	ns := rec.notified()
	if len(ns) != 1 {
		t.Fatalf("%d notifications, want 1", len(ns))
	}
	n := ns[0]
	if n.Type != notify.TypeApprovalRequested || n.Owner != "ana@example.org" || n.Subject != workloadID ||
		n.Data["grant_id"] != g.GetId() || n.Data["approvals_required"] != int32(1) || n.Data["resource"] != "prod/payments" {
		t.Errorf("notification: %+v", n)
	}
	h.mustRequest(request("repo:read"))
	if len(rec.notified()) != 1 {
		t.Errorf("an allowed grant notified the owner")
	}
}

func TestListPending_OldestFirstInPages(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var ids []string
	for range 3 {
		ids = append(ids, h.pending().GetId())
		h.clock.Add(time.Second)
	}
	h.mustRequest(request("repo:read")) // active: not listed
	var got []string
	tok := ""
	for {
		page, next, err := h.svc.ListPending(ctx, "", 2, tok)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range page {
			got = append(got, g.GetId())
		}
		if next == "" {
			break
		}
		tok = next
	}
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Errorf("pending grants (-want +got):\n%s", diff)
	}
	if _, _, err := h.svc.ListPending(ctx, "", 2, "garbage"); !errors.Is(err, grantreq.ErrInvalidRequest) {
		t.Errorf("bad page token = %v, want ErrInvalidRequest", err)
	}
	h.clock.Add(DefaultApprovalTimeout)
	if page, _, _ := h.svc.ListPending(ctx, "", 0, ""); len(page) != 0 {
		t.Errorf("timed-out grants listed: %d", len(page))
	}
}

func TestApprove_PendingGrantStoredBeforeApprovalsKeepsItsExpiry(t *testing.T) {
	h := newHarness(t)
	h.storeEntries()
	ctx := context.Background()
	expires := h.clock.Now().Add(10 * time.Minute).Unix()
	legacy, err := h.store.CreateGrant(ctx, &typesv1.Grant{
		Id: "legacy", SpiffeId: workloadID, EntryId: "entry-1", Node: agentID, Owner: "ana@example.org",
		Scopes: []string{"deploy"}, Status: typesv1.GrantStatus_GRANT_STATUS_PENDING,
		CreatedAt: h.clock.Now().Unix(), ExpiresAt: expires,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.clock.Add(time.Minute)
	got, err := h.svc.Approve(ctx, legacy.GetId(), bob, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE || got.GetExpiresAt() != expires {
		t.Errorf("approved legacy grant: %v until %d, want ACTIVE until %d", got.GetStatus(), got.GetExpiresAt(), expires)
	}
}

func TestApprove_OnePersonUnderTwoSVIDsCountsOnce(t *testing.T) {
	h := newHarness(t)
	laptop := "spiffe://example.org/nhid/agent/join_token/"
	h.storeEntries(
		&typesv1.Entry{Id: "carl-1", SpiffeId: "spiffe://example.org/approvers/carl", ParentId: laptop + "carl",
			Selectors: []string{"unix:uid:1000"}, Owner: "carl@example.org", Admin: true},
		// carl's second console: another ID, the same owner.
		&typesv1.Entry{Id: "carl-2", SpiffeId: "spiffe://example.org/approvers/carl-ci", ParentId: laptop + "ci",
			Selectors: []string{"unix:uid:4000"}, Owner: "carl@example.org", Admin: true},
		// An ownerless console on carl's laptop and uid.
		&typesv1.Entry{Id: "carl-3", SpiffeId: "spiffe://example.org/approvers/laptop", ParentId: laptop + "carl",
			Selectors: []string{"unix:uid:1000", "unix:sha256:def"}, Admin: true},
		// dora: uid 1000 too, on her own laptop.
		&typesv1.Entry{Id: "dora", SpiffeId: "spiffe://example.org/approvers/dora", ParentId: laptop + "dora",
			Selectors: []string{"unix:uid:1000"}, Owner: "dora@example.org", Admin: true},
	)
	svid := func(id string) Principal { return Principal{Name: id, SPIFFEID: id} }
	g := h.critical()
	ctx := context.Background()
	if _, err := h.svc.Approve(ctx, g.GetId(), svid("spiffe://example.org/approvers/carl"), ""); err != nil {
		t.Fatalf("carl's approval: %v", err)
	}
	for _, again := range []string{"spiffe://example.org/approvers/carl-ci", "spiffe://example.org/approvers/laptop"} {
		_, err := h.svc.Approve(ctx, g.GetId(), svid(again), "")
		if !errors.Is(err, ErrAlreadyApproved) || !strings.Contains(err.Error(), "same person as spiffe://example.org/approvers/carl") {
			t.Errorf("second approval by %s = %v, want ErrAlreadyApproved naming carl", again, err)
		}
	}
	got, err := h.svc.Approve(ctx, g.GetId(), svid("spiffe://example.org/approvers/dora"), "")
	if err != nil || got.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE || len(got.GetApprovals()) != 2 {
		t.Fatalf("dora's approval = %v (%d approvals), %v; want ACTIVE with two", got.GetStatus(), len(got.GetApprovals()), err)
	}
}
