package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestExamples_BehaveAsDescribed loads examples/policies as a server would,
// in the Europe/Berlin zone, and checks each behaviour its comments promise.
func TestExamples_BehaveAsDescribed(t *testing.T) {
	berlin := mustLocation(t, "Europe/Berlin")
	te := newEngine(t, Config{Path: "../../examples/policies", Location: berlin})
	tuesday := func(hour int) time.Time { return time.Date(2026, 12, 8, hour, 0, 0, 0, berlin) }
	saturday10 := time.Date(2026, 12, 12, 10, 0, 0, 0, berlin)
	deploy := func(now time.Time) Input {
		return Input{
			Subject: Subject{SPIFFEID: "spiffe://example.org/ci/deployer", Reputation: 700},
			Request: Request{Scopes: []string{"deploy:web", "repo:read"}, Resource: "prod/web", Action: "deploy", TTL: time.Hour},
			Now:     now,
		}
	}
	payment := func(lastHour int) Input {
		return Input{
			Subject: Subject{SPIFFEID: "spiffe://example.org/agents/payments", Reputation: 650},
			Request: Request{Scopes: []string{"payments:initiate", "ledger:write"}, Action: "pay", TTL: time.Minute,
				AuthorizationDetails: []any{map[string]any{"type": "payment_initiation",
					"instructedAmount": map[string]any{"currency": "EUR", "amount": 120.5}}}},
			Now:   tuesday(14),
			Usage: Usage{LastHour: lastHour, LastDay: lastHour},
		}
	}
	lowRep := func(scopes ...string) Input {
		return Input{
			Subject: Subject{SPIFFEID: "spiffe://example.org/agents/summariser", Reputation: 250},
			Request: Request{Scopes: scopes, Resource: "repo/docs", Action: "read", TTL: time.Hour},
			Now:     tuesday(11),
		}
	}
	deleteIn := func(resource string) Input {
		return Input{
			Subject: Subject{SPIFFEID: "spiffe://example.org/agents/janitor", Reputation: 800},
			Request: Request{Scopes: []string{"storage:delete"}, Resource: resource, Action: "delete", TTL: time.Minute},
			Now:     tuesday(11),
		}
	}
	tests := []struct {
		name string
		in   Input
		want Decision
	}{
		{"deploy at 10:00 on a Tuesday is allowed, narrowed to deploy scopes", deploy(tuesday(10)),
			Decision{Effect: Allow, Rule: "deploys-business-hours", Reason: "allowed by policy rule deploys-business-hours",
				MaxTTL: 30 * time.Minute, Scopes: []string{"deploy:web"}}},
		{"deploy at 23:00 on a Tuesday is denied", deploy(tuesday(23)),
			Decision{Effect: Deny, Rule: "deploys-outside-business-hours",
				Reason: "deploys are allowed Monday to Friday, 09:00 to 18:00 Europe/Berlin time; it is 2026-12-08 23:00"}},
		{"deploy at 08:00 is denied", deploy(tuesday(8)),
			Decision{Effect: Deny, Rule: "deploys-outside-business-hours",
				Reason: "deploys are allowed Monday to Friday, 09:00 to 18:00 Europe/Berlin time; it is 2026-12-08 08:00"}},
		{"deploy on a Saturday is denied", deploy(saturday10),
			Decision{Effect: Deny, Rule: "deploys-outside-business-hours",
				Reason: "deploys are allowed Monday to Friday, 09:00 to 18:00 Europe/Berlin time; it is 2026-12-12 10:00"}},
		{"a payment below the hourly limit is allowed for payment scopes only", payment(9),
			Decision{Effect: Allow, Rule: "payments", Reason: "allowed by policy rule payments",
				MaxTTL: 5 * time.Minute, Scopes: []string{"payments:initiate"}}},
		{"the 11th payment in an hour is denied", payment(10),
			Decision{Effect: Deny, Rule: "payments-rate-limit", RateLimited: true,
				Reason: "payment limit reached: 10 payments in the last hour, at most 10 are allowed"}},
		{"below reputation 300, read scopes are granted and the rest dropped", lowRep("repo:read", "repo:write"),
			Decision{Effect: Allow, Rule: "low-reputation-read-only", Reason: "reputation 250 is below 300: read-only access",
				MaxTTL: 10 * time.Minute, Scopes: []string{"repo:read"}}},
		{"below reputation 300, a request without read scopes is denied", lowRep("deploy:web"),
			Decision{Effect: Deny, Rule: "low-reputation-deny",
				Reason: "reputation 250 is below 300: only *:read scopes are granted"}},
		{"a production delete needs two approvers", deleteIn("prod/db/users"),
			Decision{Effect: RequireApproval, Rule: "production-delete-needs-approval",
				Reason: "deleting production resources needs approval by two people", Critical: true}},
		{"a staging delete matches no rule", deleteIn("staging/db/users"),
			Decision{Effect: Deny, Reason: "no policy rule allows this request"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := te.Decide(context.Background(), tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
	if logs := te.logs.String(); !strings.Contains(logs, "policy loaded") || strings.Contains(logs, "evaluation failed") {
		t.Errorf("unexpected logs:\n%s", logs)
	}
}
