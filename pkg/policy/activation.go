package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
)

// Bounds on authorization_details, which arrive as free-form JSON.
const (
	maxDetails      = 64
	maxDetailValues = 4096
	maxDetailDepth  = 16
)

// activation gives one decision's input to the CEL programs. Each variable
// is converted to its CEL value once, when a rule first reads it, and then
// shared by every rule of the decision. Activations are pooled: a decision
// allocates only the CEL values its rules read.
type activation struct {
	in      Input
	local   time.Time // in.Now in the policy's zone
	details []any     // normalised authorization_details
	vals    [32]ref.Val

	hour, minute int
	weekday      time.Weekday
	dateSet      bool
	dateStr      string // time.date once read
	// iter and accu are the comprehension variables of the native path,
	// one slot per level of nesting.
	iter [maxNativeDepth]string
	accu [maxNativeDepth]bool
	// shared is the CEL execution frame the untracked programs of the
	// decision share, sparing each evaluation a frame of its own. Programs
	// with a run-time cost limit get a fresh frame each, so that no cost
	// tracker outlives its program.
	shared *interpreter.ExecutionFrame
}

var _ interpreter.Activation = (*activation)(nil)

var activations = sync.Pool{New: func() any { return new(activation) }}

// newActivation validates in and prepares it for evaluation. The caller
// releases the activation once no CEL value of the decision is in use.
func newActivation(in *Input, loc *time.Location) (*activation, error) {
	if loc == nil {
		loc = time.UTC
	}
	if in.Now.IsZero() {
		return nil, errors.New("the decision time is not set")
	}
	if err := validateInput(in); err != nil {
		return nil, err
	}
	details, err := normalizeDetails(in.Request.AuthorizationDetails)
	if err != nil {
		return nil, err
	}
	if len(loc.String()) > maxString {
		return nil, fmt.Errorf("time zone name is longer than %d bytes", maxString)
	}
	a := activations.Get().(*activation)
	a.in, a.local, a.details = *in, in.Now.In(loc), details
	a.hour, a.minute, _ = a.local.Clock()
	a.weekday = a.local.Weekday()
	return a, nil
}

// date returns time.date, formatting it on first use.
func (a *activation) date() string {
	if !a.dateSet {
		a.dateStr, a.dateSet = a.local.Format(time.DateOnly), true
	}
	return a.dateStr
}

// release returns a to the pool, dropping every reference it holds so that
// a pooled activation keeps no request alive.
func (a *activation) release() {
	if a.shared != nil {
		a.shared.Close()
	}
	*a = activation{}
	activations.Put(a)
}

// frame returns the decision's shared execution frame.
func (a *activation) frame() (*interpreter.ExecutionFrame, error) {
	if a.shared == nil {
		f, err := interpreter.NewExecutionFrame(a)
		if err != nil {
			return nil, err
		}
		a.shared = f
	}
	return a.shared, nil
}

// ResolveName returns the value of a variable declared in variables.
func (a *activation) ResolveName(name string) (any, bool) {
	i := variableID(name)
	if i < 0 {
		return nil, false
	}
	if a.vals[i] == nil {
		a.vals[i] = variables[i].get(a)
	}
	return a.vals[i], true
}

// Parent implements interpreter.Activation; there is none.
func (a *activation) Parent() interpreter.Activation { return nil }

// validateInput enforces the size bounds the cost estimator assumes.
func validateInput(in *Input) error {
	s, r, u := &in.Subject, &in.Request, &in.Usage
	for _, f := range []struct{ name, v string }{
		{"subject.spiffe_id", s.SPIFFEID}, {"subject.entry_id", s.EntryID},
		{"subject.purpose", s.Purpose}, {"subject.owner", s.Owner},
		{"request.resource", r.Resource}, {"request.action", r.Action}, {"request.reason", r.Reason},
	} {
		if len(f.v) > maxString {
			return fmt.Errorf("%s is longer than %d bytes", f.name, maxString)
		}
	}
	for _, f := range []struct {
		name string
		v    []string
	}{{"subject.selectors", s.Selectors}, {"subject.node_selectors", s.NodeSelectors}, {"request.scopes", r.Scopes}} {
		if len(f.v) > maxList {
			return fmt.Errorf("%s has %d items; at most %d are allowed", f.name, len(f.v), maxList)
		}
		for i, v := range f.v {
			if len(v) > maxString {
				return fmt.Errorf("%s[%d] is longer than %d bytes", f.name, i, maxString)
			}
		}
	}
	if r.TTL < 0 {
		return fmt.Errorf("request.ttl must not be negative; got %s", r.TTL)
	}
	if u.LastMinute < 0 || u.LastHour < 0 || u.LastDay < 0 || u.Active < 0 {
		return fmt.Errorf("usage counts must not be negative; got %+v", *u)
	}
	return nil
}

// normalizeDetails checks that authorization_details is an RFC 9396 array
// (objects with a non-empty string "type") of bounded size, and copies it
// with every number as a float64, the CEL double encoding/json produces.
func normalizeDetails(in []any) ([]any, error) {
	if len(in) > maxDetails {
		return nil, fmt.Errorf("request.authorization_details has %d items; at most %d are allowed", len(in), maxDetails)
	}
	if len(in) == 0 {
		return nil, nil
	}
	budget := maxDetailValues
	out := make([]any, len(in))
	for i, d := range in {
		obj, ok := d.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("request.authorization_details[%d] is not a JSON object", i)
		}
		if t, ok := obj["type"].(string); !ok || t == "" {
			return nil, fmt.Errorf("request.authorization_details[%d].type must be a non-empty string", i)
		}
		v, err := normalizeJSON(obj, 1, &budget)
		if err != nil {
			return nil, err.at(fmt.Sprintf("[%d]", i))
		}
		out[i] = v
	}
	return out, nil
}

// detailError is a problem inside authorization_details. Its path is built
// on the way out, so that valid input costs no path strings.
type detailError struct {
	rpath []string // innermost segment first
	msg   string
}

func (e *detailError) at(segment string) *detailError {
	e.rpath = append(e.rpath, segment)
	return e
}

func (e *detailError) Error() string {
	var b strings.Builder
	b.WriteString("request.authorization_details")
	for i := len(e.rpath) - 1; i >= 0; i-- {
		b.WriteString(e.rpath[i])
	}
	if e.msg[0] != ' ' {
		b.WriteString(": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

func detailErrorf(format string, args ...any) *detailError {
	return &detailError{msg: fmt.Sprintf(format, args...)}
}

func normalizeJSON(v any, depth int, budget *int) (any, *detailError) {
	if *budget--; *budget < 0 {
		return nil, detailErrorf(" has more than %d values in all", maxDetailValues)
	}
	if depth > maxDetailDepth {
		return nil, detailErrorf(" is nested more than %d levels deep", maxDetailDepth)
	}
	switch x := v.(type) {
	case nil, bool, float64:
		return x, nil
	case string:
		if len(x) > maxString {
			return nil, detailErrorf(" is longer than %d bytes", maxString)
		}
		return x, nil
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return nil, detailErrorf("%q is not a number", string(x))
		}
		return f, nil
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			var err *detailError
			if out[i], err = normalizeJSON(e, depth+1, budget); err != nil {
				return nil, err.at(fmt.Sprintf("[%d]", i))
			}
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			var err *detailError
			if out[k], err = normalizeJSON(e, depth+1, budget); err != nil {
				return nil, err.at("." + k)
			}
		}
		return out, nil
	}
	return nil, detailErrorf(" holds a %T, which is not a JSON value", v)
}
