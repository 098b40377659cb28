package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
)

// grantsPolicy allows deploys and payments, at most two payment grants an
// hour per agent.
const grantsPolicy = `version: 1
rules:
  - name: payments-rate-limit
    when: request.scopes.exists(s, s.startsWith("payments:")) && usage.last_hour >= 2
    effect: deny
    reason: "payment limit reached: at most 2 payments an hour"
  - name: payments
    when: request.scopes.exists(s, s.startsWith("payments:"))
    effect: allow
    scopes: request.scopes.filter(s, s.startsWith("payments:"))
    max_ttl: 5m
  - name: deploys
    when: request.scopes.exists(s, s.startsWith("deploy:"))
    effect: allow
    scopes: request.scopes.filter(s, s.startsWith("deploy:"))
    max_ttl: 10m
`

// deployArgs are agent-task flags for a staging deploy.
func deployArgs(extra ...string) []string {
	return append([]string{"--scope", "deploy:staging", "--resource", "app/web", "--action", "deploy",
		"--reason", "ship release 1.4.2", "--ttl", "5m"}, extra...)
}

func TestGrants_AgentTaskGetsATxnTokenThatVerifies(t *testing.T) {
	t.Parallel()
	c := startGrantCluster(t, grantsPolicy)
	c.startResourceServer(t)
	tokenFile := filepath.Join(c.a.dir, "txn-token")
	details := `[{"type":"deployment","locations":["staging"],"actions":["deploy"]}]`
	run := c.runTask(t, deployArgs("--details", details, "--url", c.resource+"/deploy", "--write-token", tokenFile)...)
	if run.exit != 0 {
		t.Fatalf("agent-task exited %d: %+v", run.exit, run.events)
	}

	id := run.find(t, "identity")
	if id.SPIFFEID != c.taskID || id.Purpose != taskPurpose || id.Owner != taskOwner || id.EntryID == "" {
		t.Fatalf("the SVID's purpose attribute: %+v", id)
	}
	st := run.find(t, "status")
	if st.State != "GRANTED" || !cmp.Equal(st.Scopes, []string{"deploy:staging"}) {
		t.Fatalf("status %+v, want GRANTED deploy:staging", st)
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	claims := verifyWithJWKS(t, c.s, string(token))
	checkTxnClaims(t, claims, c, st.GrantID, details)

	call := run.find(t, "call")
	var served struct {
		OK     bool           `json:"ok"`
		Claims map[string]any `json:"claims"`
	}
	if err := json.Unmarshal(call.Body, &served); err != nil || call.Status != 200 || !served.OK {
		t.Fatalf("resource server answered %d %s", call.Status, call.Body)
	}
	if diff := cmp.Diff(claims, served.Claims); diff != "" {
		t.Fatalf("claims the resource server verified differ from the token's (-token +served):\n%s", diff)
	}

	if run.find(t, "released").GrantID != st.GrantID {
		t.Fatalf("released another grant than %s", st.GrantID)
	}
	if got := grantStatusOf(t, c.s, st.GrantID); got != "GRANT_STATUS_RELEASED" {
		t.Fatalf("grant status after release = %s", got)
	}
	// The server's ledger says what the SVID serial was issued for.
	var issued struct {
		SVID struct {
			SpiffeID string `json:"spiffe_id"`
			EntryID  string `json:"entry_id"`
			Purpose  string `json:"purpose"`
			Owner    string `json:"owner"`
		} `json:"svid"`
	}
	c.s.ctlJSON(t, &issued, "svid", "show", id.Serial)
	want := taskEvent{SPIFFEID: c.taskID, EntryID: id.EntryID, Purpose: taskPurpose, Owner: taskOwner}
	got := taskEvent{SPIFFEID: issued.SVID.SpiffeID, EntryID: issued.SVID.EntryID, Purpose: issued.SVID.Purpose, Owner: issued.SVID.Owner}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("svid show %s (-want +got):\n%s", id.Serial, diff)
	}
}

// checkTxnClaims checks every claim of a Txn-Token issued to c's
// agent-task for deployArgs.
func checkTxnClaims(t *testing.T, claims map[string]any, c *grantCluster, grantID, details string) {
	t.Helper()
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if iat <= 0 || exp <= iat || exp-iat > 300 {
		t.Errorf("iat %v, exp %v: want a lifetime of at most the 300 s asked for", claims["iat"], claims["exp"])
	}
	aud := claims["aud"]
	if list, ok := aud.([]any); ok && len(list) == 1 {
		aud = list[0]
	}
	var wantDetails any
	if err := json.Unmarshal([]byte(details), &wantDetails); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"txn": grantID, "sub": c.taskID, "aud": "spiffe://" + trustDomain, "scope": "deploy:staging", "req_wl": c.agentID,
		"tctx": map[string]any{"purpose": taskPurpose, "owner": taskOwner, "resource": "app/web", "action": "deploy",
			"reason": "ship release 1.4.2", "authorization_details": wantDetails},
		"rctx": map[string]any{"node": c.agentID},
	}
	got := map[string]any{"aud": aud}
	for k := range want {
		if k != "aud" {
			got[k] = claims[k]
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Txn-Token claims (-want +got):\n%s", diff)
	}
}

// verifyWithJWKS checks token's signature and typ against the trust
// domain's JWKS and returns its claims.
func verifyWithJWKS(t *testing.T, s *server, token string) map[string]any {
	t.Helper()
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(s.mustCtl(t, "bundle", "show", "--format", "jwks")), &jwks); err != nil {
		t.Fatalf("bundle JWKS: %v", err)
	}
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256})
	if err != nil {
		t.Fatalf("the Txn-Token is not a JWS: %v", err)
	}
	h := parsed.Headers[0]
	if typ := h.ExtraHeaders[jose.HeaderType]; typ != "txntoken+jwt" {
		t.Fatalf("typ = %v, want txntoken+jwt", typ)
	}
	keys := jwks.Key(h.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q is not in the JWKS", h.KeyID)
	}
	claims := map[string]any{}
	if err := parsed.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("the Txn-Token does not verify against the JWKS: %v", err)
	}
	return claims
}

func grantStatusOf(t *testing.T, s *server, id string) string {
	t.Helper()
	var out struct {
		Grant struct {
			Status string `json:"status"`
		} `json:"grant"`
	}
	s.ctlJSON(t, &out, "grant", "show", id)
	return out.Grant.Status
}

func TestGrants_ScopesOutsideTheCeilingAreNarrowedOrDenied(t *testing.T) {
	t.Parallel()
	c := startGrantCluster(t, grantsPolicy)
	tests := []struct {
		name       string
		scopes     []string
		wantState  string
		wantScopes []string
		wantRule   string
		wantExit   int
	}{
		{"partly outside is narrowed", []string{"deploy:staging", "deploy:prod"}, "GRANTED", []string{"deploy:staging"}, "deploys", 0},
		{"wholly outside is denied", []string{"deploy:prod"}, "DENIED", nil, "scope_ceiling", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"--resource", "app/web", "--action", "deploy", "--reason", "ship", "--ttl", "1m"}
			for _, s := range tt.scopes {
				args = append(args, "--scope", s)
			}
			run := c.runTask(t, args...)
			st := run.find(t, "status")
			got := []any{st.State, st.Scopes, st.Rule, run.exit}
			if diff := cmp.Diff([]any{tt.wantState, tt.wantScopes, tt.wantRule, tt.wantExit}, got); diff != "" {
				t.Fatalf("state, scopes, rule, exit (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGrants_RateLimitDeniesWithThePolicysReason(t *testing.T) {
	t.Parallel()
	c := startGrantCluster(t, grantsPolicy)
	pay := []string{"--scope", "payments:send", "--resource", "invoices/2026-07", "--action", "pay",
		"--reason", "pay supplier invoice", "--ttl", "1m", "--details", `[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"120.00"}}]`}
	for i := range 2 {
		if st := c.runTask(t, pay...).find(t, "status"); st.State != "GRANTED" || st.Rule != "payments" {
			t.Fatalf("payment %d: %+v, want GRANTED by payments", i+1, st)
		}
	}
	run := c.runTask(t, pay...)
	st := run.find(t, "status")
	if st.State != "DENIED" || st.Rule != "payments-rate-limit" || st.Reason != "payment limit reached: at most 2 payments an hour" || run.exit != 3 {
		t.Fatalf("third payment: %+v (exit %d), want DENIED with the policy's reason", st, run.exit)
	}
}

func TestGrants_RevokedGrantIsRefusedOnTheNextCall(t *testing.T) {
	t.Parallel()
	c := startGrantCluster(t, grantsPolicy)
	c.startResourceServer(t)
	events, stdin := c.startTask(t, deployArgs("--url", c.resource+"/deploy", "--repeat", "2", "--step", "--keep")...)
	st := nextEvent(t, events, "status")
	if st.State != "GRANTED" {
		t.Fatalf("status %+v, want GRANTED", st)
	}
	if first := nextEvent(t, events, "call"); first.Status != 200 {
		t.Fatalf("first call: %d %s, want 200", first.Status, first.Body)
	}
	c.s.mustCtl(t, "grant", "revoke", st.GrantID, "--reason", "task aborted by its owner")
	if _, err := stdin.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	second := nextEvent(t, events, "call")
	if second.Status != 401 || !strings.Contains(string(second.Body), "no longer active") {
		t.Fatalf("call after revocation: %d %s, want 401: the grant is no longer active", second.Status, second.Body)
	}
	if got := grantStatusOf(t, c.s, st.GrantID); got != "GRANT_STATUS_REVOKED" {
		t.Fatalf("grant status = %s, want revoked", got)
	}
}

func TestGrants_BadInputIsRefusedWithInvalidArgumentAndStoresNothing(t *testing.T) {
	t.Parallel()
	c := startGrantCluster(t, grantsPolicy)
	before := c.s.mustCtl(t, "-o", "json", "grant", "list")
	base := func(mod ...string) []string {
		args := map[string]string{"--resource": "app/web", "--action": "deploy", "--reason": "ship", "--ttl": "1m"}
		for i := 0; i+1 < len(mod); i += 2 {
			args[mod[i]] = mod[i+1]
		}
		out := []string{"--scope", "deploy:staging"}
		if s, ok := args["--scope"]; ok {
			out = []string{"--scope", s}
		}
		for k, v := range args {
			if k != "--scope" {
				out = append(out, k, v)
			}
		}
		return out
	}
	tests := []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"oversized reason", base("--reason", strings.Repeat("r", 1025)), "reason: is 1025 bytes"},
		{"no reason", base("--reason", ""), "reason: required"},
		{"oversized details", base("--details", `[{"type":"x","pad":"`+strings.Repeat("p", 17<<10)+`"}]`), "authorization_details"},
		{"details not an array", base("--details", `{"type":"deployment"}`), "authorization_details"},
		{"details of strings", base("--details", `["deployment"]`), "authorization_details"},
		{"detail without type", base("--details", `[{"actions":["deploy"]}]`), "type"},
		{"scope with a space", base("--scope", "deploy staging"), "scopes[0]"},
		{"scope with a quote", base("--scope", `deploy"staging`), "scopes[0]"},
		{"zero ttl", base("--ttl", "0s"), "ttl"},
		{"negative ttl", base("--ttl", "-5s"), "ttl"},
		{"ttl above any server's maximum", base("--ttl", "25h"), "ttl"},
		{"ttl above this server's maximum", base("--ttl", "2h"), "ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := c.runTask(t, tt.args...)
			e := run.find(t, "error")
			if run.exit != 1 || e.Code != "InvalidArgument" || !strings.Contains(e.Message, tt.wantMsg) {
				t.Fatalf("exit %d, %s %q; want InvalidArgument naming %q", run.exit, e.Code, e.Message, tt.wantMsg)
			}
		})
	}
	if after := c.s.mustCtl(t, "-o", "json", "grant", "list"); after != before {
		t.Fatalf("grants stored for bad input:\nbefore %s\nafter %s", before, after)
	}
}
