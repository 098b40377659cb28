package policy

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/common/types"
)

// maxReason bounds a reason computed by reason_expr, in characters; it ends
// up in tokens, logs and audit records.
const maxReason = 1024

var stringSliceType = reflect.TypeFor[[]string]()

// Decide evaluates the rules in order for in and returns the first matching
// rule's decision, or a denial when none matches. loc is the zone of
// time.hour, time.minute, time.weekday and time.date (nil is UTC).
//
// Decide fails closed: when the input is invalid (in.Now unset, an
// oversized string or list, malformed authorization_details) or a rule
// cannot be evaluated, it returns a denial together with an *EvalError.
func (s *Set) Decide(in Input, loc *time.Location) (Decision, error) {
	return s.decide(context.Background(), in, loc)
}

func (s *Set) decide(ctx context.Context, in Input, loc *time.Location) (Decision, error) {
	act, err := newActivation(&in, loc)
	if err != nil {
		return Decision{Effect: Deny, Reason: "invalid request: " + err.Error()}, &EvalError{Err: err}
	}
	done := ctx.Done() // cheaper to poll than ctx.Err
	for _, r := range s.rules {
		select {
		case <-done:
			return r.failed(), &EvalError{Rule: r.name, Err: ctx.Err()}
		default:
		}
		d, matched, err := r.decide(act, in.Request.Scopes)
		if err != nil {
			return r.failed(), &EvalError{Rule: r.name, Err: err}
		}
		if matched {
			return d, nil
		}
	}
	return Decision{Effect: Deny, Reason: noMatchReason}, nil
}

// failed is the denial for a rule that could not be evaluated.
func (r *rule) failed() Decision {
	return Decision{Effect: Deny, Rule: r.name, Reason: "policy rule " + r.name + " could not be evaluated"}
}

// decide evaluates the rule; when it matches, it returns its decision.
func (r *rule) decide(act *activation, requested []string) (Decision, bool, error) {
	out, err := r.when.eval(act)
	if err != nil {
		return Decision{}, false, fmt.Errorf("when: %w", err)
	}
	matched, ok := out.(types.Bool)
	if !ok {
		return Decision{}, false, fmt.Errorf("when: got %s, want bool", out.Type().TypeName())
	}
	if !matched {
		return Decision{}, false, nil
	}
	d := Decision{Effect: r.effect, Rule: r.name, Reason: r.reason, MaxTTL: r.maxTTL, Critical: r.critical}
	if r.reasonExpr != nil {
		if d.Reason, err = evalReason(r.reasonExpr, act); err != nil {
			return Decision{}, false, fmt.Errorf("reason_expr: %w", err)
		}
	}
	if d.Reason == "" {
		d.Reason = defaultReason(r.effect, r.name)
	}
	if r.scopes != nil {
		if d.Scopes, err = narrow(r.scopes, act, requested); err != nil {
			return Decision{}, false, fmt.Errorf("scopes: %w", err)
		}
		if d.Scopes != nil && len(d.Scopes) == 0 {
			return Decision{Effect: Deny, Rule: r.name,
				Reason: "policy rule " + r.name + " allows none of the requested scopes"}, true, nil
		}
	}
	return d, true, nil
}

func evalReason(p *program, act *activation) (string, error) {
	out, err := p.eval(act)
	if err != nil {
		return "", err
	}
	s, ok := out.(types.String)
	if !ok {
		return "", fmt.Errorf("got %s, want string", out.Type().TypeName())
	}
	reason := string(s)
	if utf8.RuneCountInString(reason) > maxReason {
		reason = string([]rune(reason)[:maxReason-1]) + "…"
	}
	return reason, nil
}

// narrow evaluates a scopes expression and keeps the requested scopes it
// names, in request order: policy can only narrow a request, never widen
// it. A request without scopes has nothing to narrow (nil).
func narrow(p *program, act *activation, requested []string) ([]string, error) {
	out, err := p.eval(act)
	if err != nil {
		return nil, err
	}
	native, err := out.ConvertToNative(stringSliceType)
	if err != nil {
		return nil, fmt.Errorf("got %s, want list(string)", out.Type().TypeName())
	}
	if len(requested) == 0 {
		return nil, nil
	}
	allowed := native.([]string)
	contains := func(s string) bool { return slices.Contains(allowed, s) }
	if len(allowed) > 32 { // a set only pays off for long lists
		set := make(map[string]bool, len(allowed))
		for _, s := range allowed {
			set[s] = true
		}
		contains = func(s string) bool { return set[s] }
	}
	narrowed := make([]string, 0, len(requested))
	for _, s := range requested {
		if contains(s) && !slices.Contains(narrowed, s) { // requested has at most maxList
			narrowed = append(narrowed, s)
		}
	}
	return narrowed, nil
}
