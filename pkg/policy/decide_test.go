package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // the zones below, on hosts without a zone database

	"github.com/google/go-cmp/cmp"
)

// mustCompile compiles one policy file given as YAML lines.
func mustCompile(t testing.TB, doc ...string) *Set {
	t.Helper()
	set, err := Compile(map[string][]byte{"p.yaml": []byte(lines(append([]string{"version: 1", "rules:"}, doc...)...))})
	if err != nil {
		t.Fatalf("Compile:\n%v", err)
	}
	return set
}

// friday10UTC is Friday 2026-12-04 10:00 UTC.
var friday10UTC = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func baseInput() Input {
	return Input{
		Subject: Subject{SPIFFEID: "spiffe://example.org/agent", EntryID: "e1", Purpose: "deploys", Owner: "alice",
			Selectors: []string{"unix:uid:1000"}, Reputation: 500},
		Request: Request{Scopes: []string{"deploy:web", "repo:read"}, Resource: "prod/web", Action: "deploy",
			Reason: "release 1.2", TTL: 15 * time.Minute},
		Now:   friday10UTC,
		Usage: Usage{LastHour: 3},
	}
}

func mustLocation(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestDecide_FirstMatchingRuleDecides(t *testing.T) {
	set := mustCompile(t,
		"  - {name: low-rep, when: 'subject.reputation < 300', effect: deny, reason: too low}",
		"  - {name: hourly-limit, when: 'usage.last_hour >= 10', effect: deny, rate_limit: true}",
		"  - {name: deletes, when: 'request.action == \"delete\"', effect: require_approval, critical: true}",
		"  - {name: deploys, when: 'request.action == \"deploy\"', effect: allow, max_ttl: 10m}",
		"  - {name: deploys-shadowed, when: 'request.action == \"deploy\"', effect: deny}",
	)
	tests := []struct {
		name   string
		modify func(*Input)
		want   Decision
	}{
		{"earlier rule wins over later ones", func(in *Input) { in.Subject.Reputation = 100 },
			Decision{Effect: Deny, Rule: "low-rep", Reason: "too low"}},
		{"a rate-limit rule marks its denial", func(in *Input) { in.Usage.LastHour = 10 },
			Decision{Effect: Deny, Rule: "hourly-limit", Reason: "denied by policy rule hourly-limit", RateLimited: true}},
		{"require approval, critical", func(in *Input) { in.Request.Action = "delete" },
			Decision{Effect: RequireApproval, Rule: "deletes", Reason: "policy rule deletes requires human approval", Critical: true}},
		{"allow with a TTL cap; the shadowed rule never runs", func(*Input) {},
			Decision{Effect: Allow, Rule: "deploys", Reason: "allowed by policy rule deploys", MaxTTL: 10 * time.Minute}},
		{"no rule matches: deny", func(in *Input) { in.Request.Action = "read" },
			Decision{Effect: Deny, Reason: "no policy rule allows this request"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			tt.modify(&in)
			got, err := set.Decide(in, nil)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecide_EvaluationErrorDeniesWithTheRuleName(t *testing.T) {
	tests := []struct {
		name, rule, want string
	}{
		{"missing map key", "{name: broken, when: 'request.authorization_details[0].amount > 1000.0', effect: require_approval}",
			"when: no such key: amount"},
		{"index out of range", "{name: broken, when: 'request.authorization_details[1].type == \"x\"', effect: allow}",
			"index out of bounds"},
		{"dyn when that is not a bool", "{name: broken, when: 'request.authorization_details[0].type', effect: allow}",
			"when: got string, want bool"},
		{"dyn reason that is not a string", "{name: broken, when: 'true', effect: deny, reason_expr: 'request.authorization_details[0].n'}",
			"reason_expr: got double, want string"},
		{"failing reason of an allow", "{name: broken, when: 'true', effect: allow, reason_expr: 'request.authorization_details[0].x'}",
			"reason_expr: no such key: x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A later rule that would allow must not get the chance.
			set := mustCompile(t, "  - "+tt.rule, "  - {name: everything, when: 'true', effect: allow}")
			in := baseInput()
			in.Request.AuthorizationDetails = []any{map[string]any{"type": "payment_initiation", "n": 1.0}}
			got, err := set.Decide(in, nil)
			want := Decision{Effect: Deny, Rule: "broken", Reason: "policy rule broken could not be evaluated"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			var ee *EvalError
			if !errors.As(err, &ee) || ee.Rule != "broken" || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want an *EvalError for rule broken containing %q", err, tt.want)
			}
		})
	}
}

func TestDecide_TimeIsReadInTheConfiguredZone(t *testing.T) {
	set := mustCompile(t,
		"  - name: clock",
		"    when: 'true'",
		"    effect: deny",
		`    reason_expr: "[string(time.weekday), string(time.hour), string(time.minute), time.date, time.zone, string(time.now.getHours())].join(' ')"`,
	)
	// 03:30 UTC on Saturday is still Friday evening in New York and
	// Saturday noon in Tokyo.
	now := time.Date(2026, 12, 5, 3, 30, 0, 0, time.UTC)
	tests := []struct {
		loc  *time.Location
		want string
	}{
		{nil, "6 3 30 2026-12-05 UTC 3"},
		{mustLocation(t, "America/New_York"), "5 22 30 2026-12-04 America/New_York 3"},
		{mustLocation(t, "Asia/Tokyo"), "6 12 30 2026-12-05 Asia/Tokyo 3"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.loc), func(t *testing.T) {
			in := baseInput()
			in.Now = now
			got, err := set.Decide(in, tt.loc)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if got.Reason != tt.want {
				t.Errorf("weekday hour minute date zone utc-hour = %q, want %q", got.Reason, tt.want)
			}
		})
	}
}

func TestDecide_ScopesOnlyNarrowTheRequest(t *testing.T) {
	tests := []struct {
		name      string
		expr      string
		requested []string
		want      Decision
	}{
		{"subset in request order", "request.scopes.filter(s, s.endsWith(':read'))",
			[]string{"b:read", "a:write", "a:read"}, Decision{Effect: Allow, Scopes: []string{"b:read", "a:read"}}},
		{"scopes that were not requested are dropped", "['a:read', 'admin:all']",
			[]string{"a:read", "b:read"}, Decision{Effect: Allow, Scopes: []string{"a:read"}}},
		{"duplicates are granted once", "request.scopes",
			[]string{"a:read", "a:read"}, Decision{Effect: Allow, Scopes: []string{"a:read"}}},
		{"nothing left denies", "request.scopes.filter(s, s.endsWith(':read'))",
			[]string{"a:write"}, Decision{Effect: Deny, Reason: "policy rule narrow allows none of the requested scopes"}},
		{"a request without scopes has nothing to narrow", "['a:read']",
			nil, Decision{Effect: Allow}},
		{"a long list of scopes", "lists.range(100).map(i, 'a' + string(i))",
			[]string{"a5", "b", "a99", "a5"}, Decision{Effect: Allow, Scopes: []string{"a5", "a99"}}},
		{"a dyn list of strings works", "request.authorization_details.map(d, d.type)",
			[]string{"payment_initiation"}, Decision{Effect: Allow, Scopes: []string{"payment_initiation"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := mustCompile(t, "  - name: narrow", "    when: 'true'", "    effect: allow", "    reason: ok",
				"    scopes: "+strings.ReplaceAll(fmt.Sprintf("%q", tt.expr), `\'`, "'"))
			in := baseInput()
			in.Request.Scopes = tt.requested
			in.Request.AuthorizationDetails = []any{map[string]any{"type": "payment_initiation"}}
			got, err := set.Decide(in, nil)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			tt.want.Rule = "narrow"
			if tt.want.Reason == "" {
				tt.want.Reason = "ok"
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecide_NonStringScopeFailsClosed(t *testing.T) {
	set := mustCompile(t, "  - {name: narrow, when: 'true', effect: allow, scopes: 'request.authorization_details'}")
	in := baseInput()
	in.Request.AuthorizationDetails = []any{map[string]any{"type": "x"}}
	got, err := set.Decide(in, nil)
	if got.Effect != Deny || err == nil {
		t.Errorf("Decide = %+v, %v; want a denial with an error", got, err)
	}
}

func TestDecide_ReasonExpressionIsBounded(t *testing.T) {
	set := mustCompile(t, "  - {name: long, when: 'true', effect: deny, reason_expr: 'request.reason + request.reason'}")
	in := baseInput()
	in.Request.Reason = strings.Repeat("é", 1000)
	got, err := set.Decide(in, nil)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	if n := len([]rune(got.Reason)); n != maxReason || !strings.HasSuffix(got.Reason, "…") {
		t.Errorf("reason has %d characters ending %q; want %d ending with an ellipsis", n, got.Reason[len(got.Reason)-4:], maxReason)
	}
}

func TestDecide_InvalidInputIsDenied(t *testing.T) {
	set := mustCompile(t, "  - {name: all, when: 'true', effect: allow}")
	deep := map[string]any{"type": "x"}
	for cur, i := deep, 0; i < maxDetailDepth; i++ {
		next := map[string]any{}
		cur["n"], cur = next, next
	}
	tests := []struct {
		name   string
		modify func(*Input)
		want   string
	}{
		{"no time", func(in *Input) { in.Now = time.Time{} }, "the decision time is not set"},
		{"too many scopes", func(in *Input) { in.Request.Scopes = make([]string, maxList+1) }, "request.scopes has 257 items; at most 256 are allowed"},
		{"long selector", func(in *Input) { in.Subject.Selectors = []string{strings.Repeat("x", maxString+1)} }, "subject.selectors[0] is longer than 4096 bytes"},
		{"long string", func(in *Input) { in.Request.Resource = strings.Repeat("x", maxString+1) }, "request.resource is longer than 4096 bytes"},
		{"negative ttl", func(in *Input) { in.Request.TTL = -time.Second }, "request.ttl must not be negative; got -1s"},
		{"negative usage", func(in *Input) { in.Usage.LastDay = -1 }, "usage counts must not be negative"},
		{"detail not an object", func(in *Input) { in.Request.AuthorizationDetails = []any{"x"} }, "request.authorization_details[0] is not a JSON object"},
		{"detail without type", func(in *Input) { in.Request.AuthorizationDetails = []any{map[string]any{"actions": []any{"read"}}} }, "request.authorization_details[0].type must be a non-empty string"},
		{"detail too deep", func(in *Input) { in.Request.AuthorizationDetails = []any{deep} }, "nested more than 16 levels deep"},
		{"detail not JSON", func(in *Input) {
			in.Request.AuthorizationDetails = []any{map[string]any{"type": "x", "f": struct{}{}}}
		}, "request.authorization_details[0].f holds a struct {}, which is not a JSON value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			tt.modify(&in)
			got, err := set.Decide(in, nil)
			var ee *EvalError
			if !errors.As(err, &ee) || ee.Rule != "" || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want an input *EvalError containing %q", err, tt.want)
			}
			if got.Effect != Deny || got.Rule != "" || !strings.HasPrefix(got.Reason, "invalid request: ") {
				t.Errorf("decision = %+v, want an input denial", got)
			}
		})
	}
}

func TestDecide_AuthorizationDetailsNumbersAreDoubles(t *testing.T) {
	set := mustCompile(t,
		"  - name: small-payment",
		"    when: >-",
		"      request.authorization_details.all(d, d.type == 'payment_initiation' &&",
		"        d.instructedAmount.amount <= 100 && d.instructedAmount.amount * 2.0 == 90.0)",
		"    effect: allow",
	)
	var details []any
	dec := json.NewDecoder(strings.NewReader(`[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":45}}]`))
	dec.UseNumber()
	if err := dec.Decode(&details); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string][]any{
		"json.Number": details,
		"float64":     {map[string]any{"type": "payment_initiation", "instructedAmount": map[string]any{"amount": 45.0}}},
		"int":         {map[string]any{"type": "payment_initiation", "instructedAmount": map[string]any{"amount": 45}}},
	} {
		t.Run(name, func(t *testing.T) {
			in := baseInput()
			in.Request.AuthorizationDetails = d
			got, err := set.Decide(in, nil)
			if err != nil || got.Effect != Allow {
				t.Errorf("Decide = %+v, %v; want allow", got, err)
			}
		})
	}
}

func TestDecide_PathologicalExpressionsAreStopped(t *testing.T) {
	tests := map[string]string{
		"nested comprehensions over the input": "request.scopes.map(a, request.scopes.map(b, request.scopes.map(c, a + b + c))).size() > 0",
		"comprehensions over free-form JSON":   "request.authorization_details.all(d, d.items.all(x, d.items.all(y, d.items.all(z, x + y + z >= 0.0))))",
	}
	for name, expr := range tests {
		t.Run(name, func(t *testing.T) {
			set := mustCompile(t, "  - name: heavy", "    when: "+expr, "    effect: allow")
			if !set.rules[0].when.tracked {
				t.Fatal("the rule's cost is not tracked at run time")
			}
			in := baseInput()
			in.Request.Scopes = make([]string, maxList)
			items := make([]any, 200)
			for i := range items {
				items[i] = float64(i)
			}
			in.Request.AuthorizationDetails = []any{map[string]any{"type": "x", "items": items}}
			got, err := set.Decide(in, nil)
			if got.Effect != Deny || err == nil || !strings.Contains(err.Error(), "cost limit exceeded") {
				t.Errorf("Decide = %+v, %v; want a denial for exceeding the cost limit", got, err)
			}
		})
	}
}

func TestCompile_BoundedExpressionsAreNotTrackedAtRunTime(t *testing.T) {
	set := mustCompile(t,
		"  - {name: a, when: 'subject.reputation > 300 && request.action == \"x\"', effect: deny}",
		"  - {name: b, when: 'request.scopes.exists(s, s.startsWith(\"deploy:\"))', effect: deny}",
	)
	for _, r := range set.rules {
		if r.when.tracked {
			t.Errorf("rule %s is cost-tracked at run time; its static bound should suffice", r.name)
		}
	}
}

func TestEffect_String(t *testing.T) {
	got := []string{Deny.String(), Allow.String(), RequireApproval.String(), Effect(7).String()}
	if diff := cmp.Diff([]string{"deny", "allow", "require_approval", "Effect(7)"}, got); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
}

func TestActivation_ResolvesEveryDeclaredVariable(t *testing.T) {
	if n, room := len(variables), len(activation{}.vals); n > room {
		t.Fatalf("%d variables, but an activation caches %d", n, room)
	}
	for i, v := range variables {
		if got := variableID(v.name); got != i {
			t.Errorf("variableID(%q) = %d, want %d", v.name, got, i)
		}
	}
	if got := variableID("subject"); got != -1 {
		t.Errorf("variableID(subject) = %d, want -1", got)
	}
}

// TestDecide_ConcurrentDecisionsKeepTheirOwnInput guards the pooled
// activations: decisions running at once never see each other's input.
func TestDecide_ConcurrentDecisionsKeepTheirOwnInput(t *testing.T) {
	set := mustCompile(t,
		"  - name: mine",
		"    when: request.scopes.exists(s, s == subject.purpose) && time.hour == usage.active",
		"    effect: allow",
		"    scopes: request.scopes.filter(s, s == subject.purpose)",
		"    reason_expr: subject.owner")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				in := baseInput()
				own := fmt.Sprintf("scope-%d-%d", g, i)
				in.Subject.Purpose, in.Subject.Owner = own, own
				in.Request.Scopes = []string{"other", own}
				in.Now = time.Date(2026, 12, 4, g, 0, 0, 0, time.UTC)
				in.Usage.Active = g
				got, err := set.Decide(in, nil)
				want := Decision{Effect: Allow, Rule: "mine", Reason: own, Scopes: []string{own}}
				if diff := cmp.Diff(want, got); err != nil || diff != "" {
					t.Errorf("goroutine %d, decision %d: %v (-want +got):\n%s", g, i, err, diff)
					return
				}
			}
		})
	}
	wg.Wait()
}
