package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const examplePolicies = "../../examples/policies"

func writePolicy(t *testing.T, dir, name, data string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPolicyCheck_CountsTheRules(t *testing.T) {
	r := runCLI(t, nil, "policy", "check", examplePolicies)
	if r.code != 0 || r.stdout != "ok: 7 rules\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want ok: 7 rules", r.code, r.stdout, r.stderr)
	}
	js := runCLI(t, nil, "policy", "check", "-o", "json", examplePolicies)
	var got struct{ Rules []string }
	if err := json.Unmarshal([]byte(js.stdout), &got); err != nil || js.code != 0 {
		t.Fatalf("exit %d, -o json output %q: %v", js.code, js.stdout, err)
	}
	want := []string{"low-reputation-read-only", "low-reputation-deny", "production-delete-needs-approval",
		"payments-rate-limit", "payments", "deploys-business-hours", "deploys-outside-business-hours"}
	if diff := cmp.Diff(want, got.Rules); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
}

func TestPolicyCheck_PrintsEveryProblemWithItsPlace(t *testing.T) {
	dir := t.TempDir()
	path := writePolicy(t, dir, "bad.yaml", strings.Join([]string{
		"version: 1",
		"rules:",
		"  - name: a",
		"    when: request.scope.exists(s, s == 'x')",
		"    effect: deny",
		"    max_ttl: 5m",
		"  - name: b",
		"    when: 'true'",
		"    effect: permit",
	}, "\n"))
	r := runCLI(t, nil, "policy", "check", path)
	if r.code != 1 || r.stdout != "" {
		t.Fatalf("exit %d, stdout %q; want exit 1 and nothing on stdout", r.code, r.stdout)
	}
	want := strings.Join([]string{
		path + ":4:18: rules[0].when: undeclared reference to 'request.scope' (did you mean 'request.scopes'?)",
		path + ":6:14: rules[0].max_ttl: only allow rules take max_ttl; this rule's effect is deny",
		path + `:9:13: rules[1].effect: must be one of allow, deny, require_approval; got "permit"`,
		"nhidctl: policy " + path + " has 3 problem(s)",
	}, "\n") + "\n"
	if diff := cmp.Diff(want, r.stderr); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

// deployInput is a deploy request at 10:00 on Tuesday 2026-12-08 in Berlin.
const deployInput = `{"subject": {"spiffe_id": "spiffe://example.org/ci/deployer", "purpose": "deploys web",
  "owner": "alice@example.org", "selectors": ["unix:uid:1000"], "reputation": 500},
 "request": {"scopes": ["deploy:web", "repo:read"], "resource": "prod/web", "action": "deploy",
  "reason": "release 1.2", "ttl": "1h", "authorization_details": [{"type": "deployment"}]},
 "time": "2026-12-08T09:00:00Z", "usage": {"last_hour": 3}}`

func TestPolicyTest_PrintsTheDecision(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want decisionJSON
	}{
		{"business hours in Berlin", []string{"--timezone", "Europe/Berlin"},
			decisionJSON{Effect: "allow", Rule: "deploys-business-hours", Reason: "allowed by policy rule deploys-business-hours",
				MaxTTL: "30m0s", Scopes: []string{"deploy:web"}}},
		{"08:00 in Tokyo is outside business hours", []string{"--timezone", "Asia/Tokyo"},
			decisionJSON{Effect: "deny", Rule: "deploys-outside-business-hours",
				Reason: "deploys are allowed Monday to Friday, 09:00 to 18:00 Asia/Tokyo time; it is 2026-12-08 18:00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"policy", "test", examplePolicies, "-o", "json", "--input", deployInput}, tt.args...)
			r := runCLI(t, nil, args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			var got decisionJSON
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("output %q: %v", r.stdout, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPolicyTest_ReadsTheInputFromAFileOrStdin(t *testing.T) {
	file := writePolicy(t, t.TempDir(), "in.json", deployInput)
	wantTable := "Effect:   allow\nRule:     deploys-business-hours\nReason:   allowed by policy rule deploys-business-hours\n" +
		"Max TTL:  30m0s\nScopes:   deploy:web\n"
	for name, r := range map[string]result{
		"file":  runCLI(t, nil, "policy", "test", examplePolicies, "--timezone", "Europe/Berlin", "--input", "@"+file),
		"stdin": runCLI(t, []byte(deployInput), "policy", "test", examplePolicies, "--timezone", "Europe/Berlin", "--input", "@-"),
	} {
		if r.code != 0 {
			t.Errorf("%s: exit %d: %s", name, r.code, r.stderr)
		}
		if diff := cmp.Diff(wantTable, r.stdout); diff != "" {
			t.Errorf("%s: table (-want +got):\n%s", name, diff)
		}
	}
}

func TestPolicyTest_RejectsBadInput(t *testing.T) {
	tests := []struct {
		name  string
		input string
		extra []string
		want  string
	}{
		{"unknown field", `{"subject": {"reputaton": 5}}`, nil, `--input: unknown field "reputaton"`},
		{"wrong type", `{"subject": {"reputation": "high"}}`, nil, "--input: subject.reputation: must be an integer, got a JSON string"},
		{"bad ttl", `{"request": {"ttl": "soon"}}`, nil, `--input: request.ttl: "soon" is not a duration`},
		{"bad time", `{"time": "tuesday"}`, nil, `--input: time: "tuesday" is not an RFC 3339 time`},
		{"details not a list", `{"request": {"authorization_details": {"type": "x"}}}`, nil, "request.authorization_details: must be a JSON array of objects"},
		{"trailing data", `{} {}`, nil, "--input: more than one JSON value"},
		{"unknown zone", `{}`, []string{"--timezone", "Mars/Olympus"}, `--timezone "Mars/Olympus"`},
		{"missing file", "@/nonexistent/in.json", nil, "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"policy", "test", examplePolicies, "--input", tt.input}, tt.extra...)
			r := runCLI(t, nil, args...)
			if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want a failure mentioning %q", r.code, r.stderr, tt.want)
			}
		})
	}
}

func TestPolicyTest_EvaluationErrorDeniesAndFails(t *testing.T) {
	path := writePolicy(t, t.TempDir(), "p.yaml", strings.Join([]string{
		"version: 1",
		"rules:",
		"  - name: amount",
		"    when: request.authorization_details[0].amount > 100.0",
		"    effect: require_approval",
	}, "\n"))
	r := runCLI(t, nil, "policy", "test", path, "-o", "json", "--input", `{"request": {"authorization_details": [{"type": "payment"}]}}`)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	var got decisionJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("output %q: %v", r.stdout, err)
	}
	want := decisionJSON{Effect: "deny", Rule: "amount", Reason: "policy rule amount could not be evaluated"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decision (-want +got):\n%s", diff)
	}
	if !strings.Contains(r.stderr, "policy rule amount: when: no such key: amount") {
		t.Errorf("stderr %q does not explain the failure", r.stderr)
	}
}
