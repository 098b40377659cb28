// Package policy owns nhid's policy-as-code: the rules, written in YAML with
// CEL conditions, that decide whether a workload gets a just-in-time grant.
//
// A policy is one YAML file or a directory of *.yaml files. Files are read
// in lexical order and rules in file order; the first rule whose `when`
// expression is true decides. No match is a denial. Every expression is
// parsed, type-checked and planned once, when the policy is loaded, so a
// typo such as `request.scope` is a load error naming the file, line and
// column; evaluation is then a walk over prepared programs whose cost is
// bounded, or, for conditions in the common subset of CEL that cannot fail
// (native.go), a call of Go closures built from them that computes the
// same answers. Anything that goes wrong while deciding denies (fail
// closed).
//
// The package knows nothing of stores, tokens or scope ceilings: the server
// gathers the Input, calls Decide, and intersects the Decision's scopes with
// the entry's scope_ceiling itself. docs/policy.md is the language reference.
package policy

import (
	"strconv"
	"time"
)

// Subject is the workload identity asking for a grant, as the server knows
// it from the registration entry and the node.
type Subject struct {
	SPIFFEID      string
	EntryID       string
	Purpose       string
	Owner         string
	Selectors     []string
	NodeSelectors []string
	// Reputation is the subject's score, 0–1000.
	Reputation int
}

// Request is what the workload asked for.
type Request struct {
	Scopes   []string
	Resource string
	Action   string
	Reason   string
	TTL      time.Duration
	// AuthorizationDetails is the decoded RFC 9396 JSON array: each element
	// a map[string]any with a string "type", as encoding/json decodes it
	// into an any (numbers as float64; json.Number is accepted too).
	AuthorizationDetails []any
}

// Usage counts the subject's grants, which policies use for rate limits.
type Usage struct {
	LastMinute, LastHour, LastDay, Active int
}

// Input is everything a policy can see when it decides.
type Input struct {
	Subject Subject
	Request Request
	// Now is the decision time. Engine.Decide fills a zero Now from its
	// clock; Set.Decide refuses it.
	Now   time.Time
	Usage Usage
}

// Effect is what a decision does with the request.
type Effect int

// The effects a rule can have. The zero value denies.
const (
	Deny Effect = iota
	Allow
	RequireApproval
)

// String returns the name policies use for e: "deny", "allow" or
// "require_approval".
func (e Effect) String() string {
	switch e {
	case Deny:
		return "deny"
	case Allow:
		return "allow"
	case RequireApproval:
		return "require_approval"
	}
	return "Effect(" + strconv.Itoa(int(e)) + ")"
}

// parseEffect maps a policy's effect name to its Effect.
func parseEffect(s string) (Effect, bool) {
	for _, e := range []Effect{Allow, Deny, RequireApproval} {
		if s == e.String() {
			return e, true
		}
	}
	return Deny, false
}

// Decision is the answer of a policy.
type Decision struct {
	Effect Effect
	// Rule names the deciding rule; "" when no rule matched or the input
	// was refused before any rule ran.
	Rule string
	// Reason explains the decision to people; never empty.
	Reason string
	// MaxTTL caps the grant's lifetime; 0 means policy sets no cap. Only
	// allow decisions carry one.
	MaxTTL time.Duration
	// Scopes is nil when the request's scopes stand as requested, otherwise
	// the narrowed set: a non-empty subset of the requested scopes, in
	// request order. The caller still intersects it with the entry's
	// scope_ceiling. Only allow decisions carry one.
	Scopes []string
	// Critical marks a require_approval decision that needs two approvers.
	Critical bool
	// RateLimited marks a deny by a rule declared `rate_limit: true`: the
	// subject exceeded a rate, which costs it reputation.
	RateLimited bool
}

// noMatchReason is the reason of the denial when no rule matched.
const noMatchReason = "no policy rule allows this request"

// defaultReason is the reason of a rule that gives none.
func defaultReason(effect Effect, rule string) string {
	switch effect {
	case Allow:
		return "allowed by policy rule " + rule
	case RequireApproval:
		return "policy rule " + rule + " requires human approval"
	}
	return "denied by policy rule " + rule
}
