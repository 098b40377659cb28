package grant

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/ca"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestRequest_AllowStoresAnActiveGrantAndIssuesItsTxnToken(t *testing.T) {
	h := newHarness(t)
	r := request("repo:read", "repo:write")
	r.AuthorizationDetails = `[ {"type": "repo", "actions": ["clone"], "amount": 1.50} ]`
	now := h.clock.Now()
	res := h.mustRequest(r)

	g := res.Grant
	want := &typesv1.Grant{
		Id: g.GetId(), SpiffeId: workloadID, EntryId: "entry-1", Node: agentID,
		Purpose: "ci", Owner: "ana@example.org",
		RequestedScopes: []string{"repo:read", "repo:write"}, Scopes: []string{"repo:read", "repo:write"},
		Resource: "repo/nhid", Action: "clone", Reason: "build release 1.2",
		AuthorizationDetails: r.AuthorizationDetails, RequestedTtl: 600,
		Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE, Rule: "ci", DecisionReason: "allowed by policy rule ci",
		CreatedAt: now.Unix(), DecidedAt: now.Unix(), ExpiresAt: now.Add(10 * time.Minute).Unix(),
		Reputation: BaselineReputation,
	}
	if diff := cmp.Diff(want, g, protocmp.Transform(), protocmp.IgnoreFields(want, "revision")); diff != "" {
		t.Errorf("grant (-want +got):\n%s", diff)
	}
	stored, err := h.store.GetGrant(context.Background(), g.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(g, stored, protocmp.Transform()); diff != "" {
		t.Errorf("stored grant differs from the result (-result +stored):\n%s", diff)
	}

	header, claims := h.verify(res.Token)
	if typ := header.ExtraHeaders[jose.HeaderType]; typ != ca.TxnTokenType {
		t.Errorf("typ header %v, want %s", typ, ca.TxnTokenType)
	}
	wantClaims := map[string]any{
		"txn": g.GetId(), "sub": workloadID, "aud": "spiffe://example.org", "iss": "spiffe://example.org/nhid/server",
		"iat": float64(now.Unix()), "exp": float64(g.GetExpiresAt()), "scope": "repo:read repo:write", "req_wl": agentID,
		"tctx": map[string]any{
			"purpose": "ci", "owner": "ana@example.org", "reason": "build release 1.2", "resource": "repo/nhid", "action": "clone",
			"authorization_details": []any{map[string]any{"type": "repo", "actions": []any{"clone"}, "amount": 1.50}},
		},
		"rctx": map[string]any{"node": agentID},
	}
	if jti, _ := claims["jti"].(string); jti == "" {
		t.Errorf("jti claim %v, want a token id", claims["jti"])
	}
	delete(claims, "jti")
	if diff := cmp.Diff(wantClaims, claims); diff != "" {
		t.Errorf("token claims (-want +got):\n%s", diff)
	}
}

func TestRequest_ScopesAreRequestedWithinCeilingWithinPolicy(t *testing.T) {
	tests := []struct {
		name       string
		scopes     []string
		action     string
		resource   string
		wantStatus typesv1.GrantStatus
		wantScopes []string
		wantRule   string
		wantReason string
	}{
		{"all within the ceiling", []string{"repo:write", "repo:read"}, "clone", "repo/nhid",
			typesv1.GrantStatus_GRANT_STATUS_ACTIVE, []string{"repo:write", "repo:read"}, "ci", ""},
		{"partly outside the ceiling is narrowed", []string{"admin", "repo:read"}, "clone", "repo/nhid",
			typesv1.GrantStatus_GRANT_STATUS_ACTIVE, []string{"repo:read"}, "ci", ""},
		{"wholly outside the ceiling is denied", []string{"admin", "root"}, "clone", "repo/nhid",
			typesv1.GrantStatus_GRANT_STATUS_DENIED, nil, RuleScopeCeiling, reasonOutsideCeiling},
		{"policy narrows further", []string{"repo:read", "repo:write"}, "read", "repo/nhid",
			typesv1.GrantStatus_GRANT_STATUS_ACTIVE, []string{"repo:read"}, "ci-read-only", ""},
		{"policy allows only scopes beyond the ceiling", []string{"deploy", "admin"}, "clone", "admin-only",
			typesv1.GrantStatus_GRANT_STATUS_DENIED, nil, "admin-only", reasonNarrowedAway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			r := request(tc.scopes...)
			r.Action, r.Resource = tc.action, tc.resource
			res := h.mustRequest(r)
			g := res.Grant
			if g.GetStatus() != tc.wantStatus || g.GetRule() != tc.wantRule {
				t.Fatalf("status %v by rule %q (%s), want %v by %q", g.GetStatus(), g.GetRule(), g.GetDecisionReason(), tc.wantStatus, tc.wantRule)
			}
			if diff := cmp.Diff(tc.wantScopes, g.GetScopes()); diff != "" {
				t.Errorf("granted scopes (-want +got):\n%s", diff)
			}
			if tc.wantReason != "" && g.GetDecisionReason() != tc.wantReason {
				t.Errorf("reason %q, want %q", g.GetDecisionReason(), tc.wantReason)
			}
			if (res.Token != "") != (tc.wantStatus == typesv1.GrantStatus_GRANT_STATUS_ACTIVE) {
				t.Errorf("token issued: %v for status %v", res.Token != "", g.GetStatus())
			}
			if res.Token != "" {
				_, claims := h.verify(res.Token)
				if claims["scope"] != strings.Join(tc.wantScopes, " ") {
					t.Errorf("scope claim %v, want %q", claims["scope"], strings.Join(tc.wantScopes, " "))
				}
			}
		})
	}
}

func TestRequest_TTLIsTheShortestOfRequestPolicyAndServer(t *testing.T) {
	tests := []struct {
		name    string
		maxTTL  time.Duration
		ttl     int32
		action  string
		wantTTL time.Duration
	}{
		{"as requested", time.Hour, 300, "clone", 5 * time.Minute},
		{"policy max_ttl caps it", time.Hour, 600, "short", 2 * time.Minute},
		{"a request below the policy cap keeps its ttl", time.Hour, 60, "short", time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.MaxTTL = tc.maxTTL })
			r := request("repo:read")
			r.Ttl, r.Action = tc.ttl, tc.action
			g := h.mustRequest(r).Grant
			if got := time.Duration(g.GetExpiresAt()-g.GetCreatedAt()) * time.Second; got != tc.wantTTL {
				t.Errorf("grant lifetime %v, want %v", got, tc.wantTTL)
			}
		})
	}
}

func TestRequest_DenyIsStoredWithRuleAndReason(t *testing.T) {
	h := newHarness(t)
	h.entry.Purpose = "reporting"
	res := h.mustRequest(request("repo:read"))
	g := res.Grant
	if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_DENIED || res.Token != "" {
		t.Fatalf("status %v, token issued %v; want DENIED without a token", g.GetStatus(), res.Token != "")
	}
	if g.GetRule() != "" || g.GetDecisionReason() == "" || g.GetEndedAt() != h.clock.Now().Unix() || len(g.GetScopes()) != 0 {
		t.Errorf("denied grant: rule %q, reason %q, ended_at %d, scopes %v", g.GetRule(), g.GetDecisionReason(), g.GetEndedAt(), g.GetScopes())
	}
	if _, err := h.store.GetGrant(context.Background(), g.GetId()); err != nil {
		t.Errorf("the denial was not stored: %v", err)
	}
}

func TestRequest_UsageCountersReachPolicy(t *testing.T) {
	h := newHarness(t)
	// usage.active >= 2 denies the third grant while two are active.
	for i := range 2 {
		if g := h.mustRequest(request("repo:read")).Grant; g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE {
			t.Fatalf("grant %d: %v (%s), want ACTIVE", i, g.GetStatus(), g.GetDecisionReason())
		}
	}
	if g := h.mustRequest(request("repo:read")).Grant; g.GetRule() != "busy" {
		t.Fatalf("third grant decided by %q (%v), want the busy rule", g.GetRule(), g.GetStatus())
	}
	// Ten minutes on, the grants have expired and none is from the last minute.
	h.clock.Add(11 * time.Minute)
	if g := h.mustRequest(request("repo:read")).Grant; g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE {
		t.Fatalf("after expiry: %v by %q, want ACTIVE", g.GetStatus(), g.GetRule())
	}
}

func TestRequest_RequireApprovalIsStoredPending(t *testing.T) {
	h := newHarness(t)
	r := request("deploy")
	r.Resource = "prod/payments"
	res := h.mustRequest(r)
	g := res.Grant
	if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING || res.Token != "" {
		t.Fatalf("status %v, token %v; want PENDING without a token", g.GetStatus(), res.Token != "")
	}
	want := &typesv1.Grant{
		Status: typesv1.GrantStatus_GRANT_STATUS_PENDING, Rule: "prod-needs-approval", Scopes: []string{"deploy"},
		ApprovalsRequired: 1, ApprovalDeadline: h.clock.Now().Add(DefaultApprovalTimeout).Unix(), Ttl: 600,
		Reputation: BaselineReputation,
	}
	got := &typesv1.Grant{
		Status: g.GetStatus(), Rule: g.GetRule(), Scopes: g.GetScopes(), ApprovalsRequired: g.GetApprovalsRequired(),
		ApprovalDeadline: g.GetApprovalDeadline(), Ttl: g.GetTtl(), Reputation: g.GetReputation(), ExpiresAt: g.GetExpiresAt(),
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("pending grant (-want +got):\n%s", diff)
	}
}

func TestRequest_WithoutPolicyRefusesAndStoresNothing(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Policy = nil })
	if _, err := h.request(request("repo:read")); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("Request = %v, want ErrNoPolicy", err)
	}
	if n := len(h.grants()); n != 0 {
		t.Errorf("%d grants stored without a policy", n)
	}
}

func TestRequest_LogsEachDecisionOnceWithoutTheToken(t *testing.T) {
	h := newHarness(t)
	res := h.mustRequest(request("repo:read"))
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "grant decided" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d decision lines, want 1:\n%s", len(lines), h.logs.String())
	}
	for k, want := range map[string]any{"grant_id": res.Grant.GetId(), "effect": "allow", "rule": "ci", "spiffe_id": workloadID} {
		if lines[0][k] != want {
			t.Errorf("log %s = %v, want %v", k, lines[0][k], want)
		}
	}
	sig := res.Token[strings.LastIndex(res.Token, ".")+1:]
	if strings.Contains(h.logs.String(), sig) || strings.Contains(h.logs.String(), res.Token) {
		t.Error("the Txn-Token appears in the log")
	}
}

func BenchmarkRequest_Allow(b *testing.B) {
	h := newHarness(b)
	// The busy rule would deny a burst; this policy allows every request.
	h.svc.policy = h.policy("version: 1\nrules:\n  - name: all\n    when: 'true'\n    effect: allow\n")
	r := request("repo:read", "repo:write")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := h.request(r)
		if err != nil || res.Token == "" {
			b.Fatalf("Request: %v", err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
}

// TestTxnToken_EveryTokenHasItsOwnJTI: a grant's tokens share its txn, but
// each is a JWT of its own, identified by a jti no other token carries
// (RFC 7519 section 4.1.7), which introspection reports (RFC 7662).
func TestTxnToken_EveryTokenHasItsOwnJTI(t *testing.T) {
	h := newHarness(t)
	res := h.mustRequest(request("repo:read"))
	again, err := h.svc.Wait(context.Background(), res.Grant.GetId())
	if err != nil {
		t.Fatalf("Wait on the active grant: %v", err)
	}
	seen := map[string]bool{}
	for i, tok := range []string{res.Token, again.Token} {
		_, claims := h.verify(tok)
		jti, _ := claims["jti"].(string)
		if jti == "" || seen[jti] || claims["txn"] != res.Grant.GetId() {
			t.Errorf("token %d: jti %v, txn %v; want a jti of its own and txn %s", i, claims["jti"], claims["txn"], res.Grant.GetId())
		}
		seen[jti] = true
	}
}
