package grant

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/reputation"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// withReputation tracks scores with the real reputation service over the
// harness's bolt store; it revokes through the grant service.
func withReputation(h **reputation.Service) harnessOpt {
	return func(c *Config) {
		svc, err := reputation.New(reputation.Config{Store: c.Store.(reputation.Store), Clock: c.Clock})
		if err != nil {
			panic(err)
		}
		*h, c.Reputation = svc, svc
	}
}

// kinds lists the event kinds behind workloadID's score, oldest first.
func kinds(t *testing.T, rep *reputation.Service) []string {
	t.Helper()
	r, err := rep.Get(context.Background(), workloadID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(r.GetEvents()) - 1; i >= 0; i-- {
		out = append(out, r.GetEvents()[i].GetKind())
	}
	return out
}

func TestReputation_DenialsRejectionsAndCleanReleasesAreObserved(t *testing.T) {
	var rep *reputation.Service
	h := newHarness(t, withReputation(&rep))
	h.storeEntries()
	ctx := context.Background()

	active := h.mustRequest(request("repo:read")).Grant
	if _, err := h.svc.Release(ctx, []string{"entry-1"}, active.GetId(), agentID); err != nil {
		t.Fatal(err)
	}
	h.mustRequest(request("nothing-in-the-ceiling")) // denied by the ceiling
	h.clock.Add(2 * time.Minute)                     // clear of the policy's usage limit
	pending := h.pending()
	if _, err := h.svc.Deny(ctx, pending.GetId(), bob, "no"); err != nil {
		t.Fatal(err)
	}
	released := h.pending() // released while pending: not a completed grant
	if _, err := h.svc.Release(ctx, []string{"entry-1"}, released.GetId(), agentID); err != nil {
		t.Fatal(err)
	}
	want := []string{"grant_released", "grant_denied", "approval_rejected"}
	if diff := cmp.Diff(want, kinds(t, rep)); diff != "" {
		t.Errorf("reputation events (-want +got):\n%s", diff)
	}
}

func TestReputation_RateLimitRuleCostsRateLimited(t *testing.T) {
	var rep *reputation.Service
	h := newHarness(t, withReputation(&rep), withPolicy(t, `version: 1
rules:
  - name: burst
    when: usage.last_minute >= 1
    effect: deny
    rate_limit: true
  - name: ci
    when: "true"
    effect: allow
`))
	h.mustRequest(request("repo:read"))
	if g := h.mustRequest(request("repo:read")).Grant; g.GetRule() != "burst" {
		t.Fatalf("second request decided by %q, want burst", g.GetRule())
	}
	if diff := cmp.Diff([]string{"rate_limited"}, kinds(t, rep)); diff != "" {
		t.Errorf("reputation events (-want +got):\n%s", diff)
	}
}

func TestReputation_PolicySeesTheScore(t *testing.T) {
	var rep *reputation.Service
	h := newHarness(t, withReputation(&rep))
	misuse(t, rep, 2) // 500 - 2×150 = 200: not restricted, below the policy's 300
	g := h.mustRequest(request("repo:read")).Grant
	if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_DENIED || g.GetRule() != "low-reputation" || g.GetReputation() != 200 {
		t.Errorf("decision: %v by %q at reputation %d, want DENIED by low-reputation at 200", g.GetStatus(), g.GetRule(), g.GetReputation())
	}
}

// misuse reports n misuses of workloadID.
func misuse(t *testing.T, rep *reputation.Service, n int) reputation.Standing {
	t.Helper()
	var st reputation.Standing
	for i := range n {
		var err error
		st, err = rep.Observe(context.Background(), reputation.Event{SPIFFEID: workloadID, Owner: "ana@example.org",
			Kind: reputation.KindMisuseReported, Reason: fmt.Sprintf("misuse %d", i), Reporter: "spiffe://example.org/rp"})
		if err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func TestReputation_RestrictedSubjectLosesItsGrantsAndNeedsApproval(t *testing.T) {
	var rep *reputation.Service
	rec := &recorders{}
	h := newHarness(t, withReputation(&rep), withRecorders(rec),
		withPolicy(t, "version: 1\nrules:\n  - name: ci\n    when: \"true\"\n    effect: allow\n"))
	rep.SetRevoker(h.svc)
	active := h.mustRequest(request("repo:read")).Grant
	if st := misuse(t, rep, 3); !st.Restricted {
		t.Fatalf("standing after 3 misuses: %+v, want restricted", st)
	}
	stored, err := h.store.GetGrant(context.Background(), active.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if stored.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_REVOKED || stored.GetEndedBy() != ReporterServer {
		t.Errorf("outstanding grant after the restriction: %v by %q, want REVOKED by server", stored.GetStatus(), stored.GetEndedBy())
	}
	if ends := rec.audited(audit.ActionGrantEnd); len(ends) != 1 || ends[0].Actor != ReporterServer || ends[0].Details["status"] != "revoked" {
		t.Errorf("grant.end records: %+v", ends)
	}
	g := h.mustRequest(request("repo:read")).Grant
	if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING || !g.GetRestricted() || g.GetApprovalsRequired() != 1 ||
		g.GetRule() != "ci" || g.GetDecisionReason() != reasonRestricted || len(g.GetScopes()) != 1 {
		t.Errorf("allowed request of a restricted subject: %v restricted %v, %d approvals, rule %q, %q, scopes %v",
			g.GetStatus(), g.GetRestricted(), g.GetApprovalsRequired(), g.GetRule(), g.GetDecisionReason(), g.GetScopes())
	}
}

func TestReputation_TrackerFailureDecidesAsRestrictedNeverWider(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, withPolicy(t, `version: 1
rules:
  - name: trusted-only
    when: request.action == "merge" && subject.reputation < 300
    effect: deny
  - name: ci
    when: "true"
    effect: allow
`), func(c *Config) { c.Reputation, c.Metrics = failingTracker{}, reg })
	g := h.mustRequest(request("repo:read")).Grant
	if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING || !g.GetRestricted() || g.GetReputation() != 0 {
		t.Errorf("allow with the tracker down: %v restricted %v reputation %d, want PENDING restricted at 0", g.GetStatus(), g.GetRestricted(), g.GetReputation())
	}
	// The lowest score makes score rules deny: a decision narrows, never
	// widens; the failed observe of the denial does not fail it.
	r := request("repo:read")
	r.Action = "merge"
	if g := h.mustRequest(r).Grant; g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_DENIED || g.GetRule() != "trusted-only" {
		t.Errorf("merge request: %v by %q, want DENIED by trusted-only", g.GetStatus(), g.GetRule())
	}
	want := `
# HELP nhid_grant_reputation_failures_total Reputation tracker failures during grant handling, by operation (standing, observe).
# TYPE nhid_grant_reputation_failures_total counter
nhid_grant_reputation_failures_total{op="observe"} 1
nhid_grant_reputation_failures_total{op="standing"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "nhid_grant_reputation_failures_total"); err != nil {
		t.Error(err)
	}
	if !strings.Contains(h.logs.String(), "reputation unavailable") {
		t.Errorf("no log line about the tracker failure:\n%s", h.logs.String())
	}
}

func TestAudit_EveryDecisionIsRecordedWithoutTheToken(t *testing.T) {
	rec := &recorders{}
	h := newHarness(t, withRecorders(rec))
	allowed := h.mustRequest(request("repo:read"))
	denied := h.mustRequest(request("nothing-in-the-ceiling")).Grant
	pending := h.pending()

	evs := rec.audited(audit.ActionGrantDecide)
	type row struct{ Actor, OnBehalfOf, Target, Outcome, Status, Rule string }
	var got []row
	for _, ev := range evs {
		got = append(got, row{ev.Actor, ev.OnBehalfOf, ev.Target, ev.Outcome, ev.Details["status"].(string), ev.Details["rule"].(string)})
		if strings.Contains(fmt.Sprint(ev), allowed.Token) {
			t.Errorf("an audit record holds the token: %+v", ev)
		}
	}
	want := []row{
		{workloadID, "ana@example.org", allowed.Grant.GetId(), audit.OutcomeSuccess, "active", "ci"},
		{workloadID, "ana@example.org", denied.GetId(), audit.OutcomeDenied, "denied", RuleScopeCeiling},
		{workloadID, "ana@example.org", pending.GetId(), audit.OutcomeSuccess, "pending", "prod-needs-approval"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("grant.decide records (-want +got):\n%s", diff)
	}
	if d := evs[0].Details; d["resource"] != "repo/nhid" || d["action"] != "clone" || !cmp.Equal(d["scopes"], []string{"repo:read"}) {
		t.Errorf("details of the allow: %+v", d)
	}
}

func TestAudit_ReleaseRevocationAndExpiryAreGrantEnds(t *testing.T) {
	rec := &recorders{}
	h := newHarness(t, withRecorders(rec))
	ctx := context.Background()
	released := h.mustRequest(request("repo:read")).Grant
	if _, err := h.svc.Release(ctx, []string{"entry-1"}, released.GetId(), agentID); err != nil {
		t.Fatal(err)
	}
	revoked := h.mustRequest(request("repo:read")).Grant
	if _, err := h.svc.Revoke(ctx, revoked.GetId(), "leaked", "uid:0"); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(2 * time.Minute) // past the usage limit of the policy
	expiring := h.mustRequest(request("repo:read")).Grant
	h.clock.Add(11 * time.Minute)
	if n := h.svc.Sweep(ctx); n != 1 {
		t.Fatalf("Sweep expired %d grants, want 1", n)
	}
	h.svc.Sweep(ctx) // nothing more to record
	type row struct{ Actor, Target, Status, Reason string }
	var got []row
	for _, ev := range rec.audited(audit.ActionGrantEnd) {
		got = append(got, row{ev.Actor, ev.Target, ev.Details["status"].(string), ev.Reason})
	}
	want := []row{
		{workloadID, released.GetId(), "released", "allowed by policy rule ci"},
		{"uid:0", revoked.GetId(), "revoked", "leaked"},
		{ReporterServer, expiring.GetId(), "expired", "allowed by policy rule ci"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("grant.end records (-want +got):\n%s", diff)
	}
}

func TestRevokeSubject_RevokesTheSubjectsLiveGrantsOnly(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	active := h.mustRequest(request("repo:read")).Grant
	pending := h.pending()
	h.clock.Add(2 * time.Minute)
	other := proto.Clone(h.entry).(*typesv1.Entry)
	other.Id, other.SpiffeId = "entry-2", "spiffe://example.org/ci/other"
	h.entry = other
	untouched := h.mustRequest(request("repo:read")).Grant
	n, err := h.svc.RevokeSubject(ctx, workloadID, "reputation below the restrict threshold")
	if err != nil || n != 2 {
		t.Fatalf("RevokeSubject = %d, %v; want 2", n, err)
	}
	for id, want := range map[string]typesv1.GrantStatus{
		active.GetId(): typesv1.GrantStatus_GRANT_STATUS_REVOKED, pending.GetId(): typesv1.GrantStatus_GRANT_STATUS_REVOKED,
		untouched.GetId(): typesv1.GrantStatus_GRANT_STATUS_ACTIVE,
	} {
		g, err := h.store.GetGrant(ctx, id)
		if err != nil || g.GetStatus() != want {
			t.Errorf("grant %s: %v, %v; want %v", id, g.GetStatus(), err, want)
		}
	}
	if n, err := h.svc.RevokeSubject(ctx, workloadID, "again"); n != 0 || err != nil {
		t.Errorf("second RevokeSubject = %d, %v; want 0", n, err)
	}
	if _, err := h.svc.RevokeSubject(ctx, workloadID, ""); err == nil {
		t.Error("RevokeSubject without a reason succeeded")
	}
}
