// Package grantreqtest holds grant requests for tests: one well-formed
// request and a table of malformed ones with the message each must produce.
package grantreqtest

import (
	"fmt"
	"strings"
	"time"

	"github.com/nhid/nhid/pkg/grantreq"

	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// BadRequest breaks one rule: Mod applied to ValidRequest, Want a fragment
// the error must contain (naming the field).
type BadRequest struct {
	Name string
	Mod  func(*grantv1.GrantRequest)
	Want string
}

// BadRequests are requests that break one rule each.
func BadRequests() []BadRequest {
	details := func(s string) func(*grantv1.GrantRequest) {
		return func(r *grantv1.GrantRequest) { r.AuthorizationDetails = s }
	}
	return []BadRequest{
		{"no scopes", func(r *grantv1.GrantRequest) { r.Scopes = nil }, "scopes: at least one scope is required"},
		{"too many scopes", func(r *grantv1.GrantRequest) {
			r.Scopes = nil
			for i := range 33 {
				r.Scopes = append(r.Scopes, fmt.Sprint("s", i))
			}
		}, "scopes: 33 scopes, at most 32 allowed"},
		{"empty scope", func(r *grantv1.GrantRequest) { r.Scopes = []string{"a", ""} }, "scopes[1]: is empty"},
		{"scope with a space", func(r *grantv1.GrantRequest) { r.Scopes = []string{"repo read"} }, "scopes[0]: holds ' '"},
		{"scope with a quote", func(r *grantv1.GrantRequest) { r.Scopes = []string{`a"b`} }, `scopes[0]: holds '"'`},
		{"scope with a backslash", func(r *grantv1.GrantRequest) { r.Scopes = []string{`a\b`} }, `scopes[0]: holds '\\'`},
		{"non-ASCII scope", func(r *grantv1.GrantRequest) { r.Scopes = []string{"lecture:é"} }, "scopes[0]: holds"},
		{"long scope", func(r *grantv1.GrantRequest) { r.Scopes = []string{strings.Repeat("a", 129)} }, "scopes[0]: is 129 bytes, at most 128"},
		{"repeated scope", func(r *grantv1.GrantRequest) { r.Scopes = []string{"a", "b", "a"} }, `scopes[2]: "a" repeats scopes[0]`},
		{"long resource", func(r *grantv1.GrantRequest) { r.Resource = strings.Repeat("r", 257) }, "resource: is 257 bytes, at most 256"},
		{"resource with a newline", func(r *grantv1.GrantRequest) { r.Resource = "a\nb" }, "resource: must be printable"},
		{"long action", func(r *grantv1.GrantRequest) { r.Action = strings.Repeat("a", 257) }, "action: is 257 bytes"},
		{"no reason", func(r *grantv1.GrantRequest) { r.Reason = "" }, "reason: required"},
		{"oversized reason", func(r *grantv1.GrantRequest) { r.Reason = strings.Repeat("x", 1025) }, "reason: is 1025 bytes, at most 1024"},
		{"reason not UTF-8", func(r *grantv1.GrantRequest) { r.Reason = "bad \xff" }, "reason: is not valid UTF-8"},
		{"reason with an escape sequence", func(r *grantv1.GrantRequest) { r.Reason = "x\x1b[2J" }, "reason: must be printable"},
		{"zero ttl", func(r *grantv1.GrantRequest) { r.Ttl = 0 }, "ttl: 0 s"},
		{"negative ttl", func(r *grantv1.GrantRequest) { r.Ttl = -5 }, "ttl: -5 s"},
		{"ttl above the maximum", func(r *grantv1.GrantRequest) { r.Ttl = int32(grantreq.MaxMaxTTL/time.Second) + 1 }, "ttl: 86401 s exceeds the maximum of"},
		{"details not JSON", details("[{"), "authorization_details: is not JSON"},
		{"details an object", details(`{"type":"x"}`), "authorization_details: must be a JSON array of objects"},
		{"details empty array", details(`[]`), "authorization_details: is an empty array"},
		{"details of strings", details(`["payment"]`), "authorization_details[0]: must be an object, got a string"},
		{"details without type", details(`[{"actions":["read"]}]`), "authorization_details[0].type: required"},
		{"details with empty type", details(`[{"type":""}]`), "authorization_details[0].type: required"},
		{"details with numeric type", details(`[{"type":7}]`), "authorization_details[0].type: required"},
		{"details with actions not strings", details(`[{"type":"t","actions":["read",1]}]`), "authorization_details[0].actions[1]: must be a string, got a number"},
		{"details with locations a string", details(`[{"type":"t","locations":"https://x"}]`), "authorization_details[0].locations: must be an array of strings"},
		{"details with an object identifier", details(`[{"type":"t","identifier":{}}]`), "authorization_details[0].identifier: must be a string"},
		{"details repeating a member", details(`[{"type":"a","type":"b"}]`), `authorization_details: repeats the member "type"`},
		{"details with two values", details(`[{"type":"a"}] [1]`), "authorization_details: holds more than one JSON value"},
		{"details too deep", details(`[{"type":"t","x":` + strings.Repeat("[", 16) + strings.Repeat("]", 16) + `}]`), "authorization_details: nests deeper than 16 levels"},
		{"details with too many objects", details("[" + strings.TrimSuffix(strings.Repeat(`{"type":"t"},`, 65), ",") + "]"), "authorization_details: holds more than 64 objects"},
		{"oversized details", details(`[{"type":"t","x":"` + strings.Repeat("a", 16<<10) + `"}]`), "authorization_details: is 16405 bytes, at most 16384"},
		{"spiffe_id too long", func(r *grantv1.GrantRequest) { r.SpiffeId = "spiffe://example.org/" + strings.Repeat("a", 2048) }, "spiffe_id: is 2069 bytes"},
	}
}

func ValidRequest() *grantv1.GrantRequest {
	return &grantv1.GrantRequest{
		Scopes: []string{"repo:read", "repo:write"}, Resource: "repo/nhid", Action: "clone",
		Reason: "build release 1.2", Ttl: 600,
		AuthorizationDetails: `[{"type":"repo","actions":["clone"],"locations":["https://git.example.org"],"identifier":"nhid","amount":{"value":1.50}}]`,
	}
}
