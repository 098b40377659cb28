package policy

import (
	"context"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/traits"
)

// maxReason bounds a reason computed by reason_expr, in characters; it ends
// up in tokens, logs and audit records.
const maxReason = 1024

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
	defer act.release()
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
	matched, err := r.when.evalBool(act)
	if err != nil {
		return Decision{}, false, fmt.Errorf("when: %w", err)
	}
	if !matched {
		return Decision{}, false, nil
	}
	d := Decision{Effect: r.effect, Rule: r.name, Reason: r.reason, MaxTTL: r.maxTTL,
		Critical: r.critical, RateLimited: r.rateLimited}
	if r.reasonExpr != nil {
		reason, err := evalReason(r.reasonExpr, act)
		if err != nil {
			return Decision{}, false, fmt.Errorf("reason_expr: %w", err)
		}
		if reason != "" { // else the default reason stands
			d.Reason = reason
		}
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

// evalBool evaluates a bool expression, natively when it can.
func (p *program) evalBool(act *activation) (bool, error) {
	if p.native != nil {
		return p.native(act), nil
	}
	out, err := p.eval(act)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("got %s, want bool", out.Type().TypeName())
	}
	return bool(b), nil
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
	if p.narrow != nil {
		return p.narrow(act, requested), nil
	}
	out, err := p.eval(act)
	if err != nil {
		return nil, err
	}
	// Reading the CEL list in place, rather than converting it to a
	// []string, keeps a decision's allocations down.
	list, ok := out.(traits.Lister)
	if !ok {
		return nil, fmt.Errorf("got %s, want list(string)", out.Type().TypeName())
	}
	size, _ := list.Size().(types.Int)
	for i := range size {
		if e := list.Get(i); e.Type() != types.StringType {
			return nil, fmt.Errorf("got a list holding %s, want list(string)", e.Type().TypeName())
		}
	}
	if len(requested) == 0 {
		return nil, nil
	}
	contains := func(s string) bool {
		for i := range size {
			if list.Get(i).(types.String) == types.String(s) {
				return true
			}
		}
		return false
	}
	if size > 32 { // a set only pays off for long lists
		set := make(map[string]bool, size)
		for i := range size {
			set[string(list.Get(i).(types.String))] = true
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
