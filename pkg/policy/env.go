package policy

import (
	"fmt"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
)

// Limits on policies and their input. The cost estimator relies on the
// input limits, which validateInput enforces.
const (
	// costLimit bounds one evaluation of one expression, in CEL cost units
	// (about one per operation; string and list work counts per element).
	// Reaching it takes a few milliseconds; a legitimate rule over a
	// request of a few dozen scopes needs a few hundred units.
	costLimit = 25_000
	// maxExprLen bounds one expression, in characters.
	maxExprLen = 16 << 10
	// maxString bounds every string of the input, in bytes.
	maxString = 4096
	// maxList bounds the scopes, selectors and node selectors of the input.
	maxList = 256
	// maxListRange bounds lists.range(n).
	maxListRange = 1024
)

// variable is one name expressions can read. Names are qualified
// ("request.scopes"): CEL resolves them as one identifier, so a misspelt
// field is an undeclared reference caught at load, with a suggestion.
type variable struct {
	name string
	typ  *cel.Type
	// size bounds a string or list variable for the cost estimator; nil
	// when the size is not bounded by validateInput.
	size *cost.SizeEstimate
	// get reads the variable from a decision's activation.
	get func(a *activation) ref.Val
}

var (
	stringSize = &cost.SizeEstimate{Max: maxString}
	listSize   = &cost.SizeEstimate{Max: maxList, Elem: stringSize}
	dateSize   = &cost.SizeEstimate{Min: 10, Max: 10}
	stringList = cel.ListType(cel.StringType)
)

// stringListVal converts the elements once, rather than on every access
// of every rule that iterates over the list.
func stringListVal(l []string) ref.Val {
	elems := make([]ref.Val, len(l))
	for i, s := range l {
		elems[i] = types.String(s)
	}
	return types.NewRefValList(types.DefaultTypeAdapter, elems)
}

// variables is the input reference; docs/policy.md describes each.
var variables = []variable{
	{"subject.spiffe_id", cel.StringType, stringSize, func(a *activation) ref.Val { return types.String(a.in.Subject.SPIFFEID) }},
	{"subject.entry_id", cel.StringType, stringSize, func(a *activation) ref.Val { return types.String(a.in.Subject.EntryID) }},
	{"subject.purpose", cel.StringType, stringSize, func(a *activation) ref.Val { return types.String(a.in.Subject.Purpose) }},
	{"subject.owner", cel.StringType, stringSize, func(a *activation) ref.Val { return types.String(a.in.Subject.Owner) }},
	{"subject.selectors", stringList, listSize, func(a *activation) ref.Val { return stringListVal(a.in.Subject.Selectors) }},
	{"subject.node_selectors", stringList, listSize, func(a *activation) ref.Val { return stringListVal(a.in.Subject.NodeSelectors) }},
	{"subject.reputation", cel.IntType, nil, func(a *activation) ref.Val { return types.Int(a.in.Subject.Reputation) }},
	{"request.scopes", stringList, listSize, func(a *activation) ref.Val { return stringListVal(a.in.Request.Scopes) }},
	{"request.resource", cel.StringType, stringSize, func(a *activation) ref.Val { return types.String(a.in.Request.Resource) }},
	{"request.action", cel.StringType, stringSize, func(a *activation) ref.Val { return types.String(a.in.Request.Action) }},
	{"request.reason", cel.StringType, stringSize, func(a *activation) ref.Val { return types.String(a.in.Request.Reason) }},
	{"request.ttl", cel.DurationType, nil, func(a *activation) ref.Val { return types.Duration{Duration: a.in.Request.TTL} }},
	{"request.authorization_details", cel.ListType(cel.DynType), nil, func(a *activation) ref.Val {
		return types.DefaultTypeAdapter.NativeToValue(a.details)
	}},
	{"time.now", cel.TimestampType, nil, func(a *activation) ref.Val { return types.Timestamp{Time: a.in.Now} }},
	{"time.hour", cel.IntType, nil, func(a *activation) ref.Val { return types.Int(a.hour) }},
	{"time.minute", cel.IntType, nil, func(a *activation) ref.Val { return types.Int(a.minute) }},
	{"time.weekday", cel.IntType, nil, func(a *activation) ref.Val { return types.Int(a.weekday) }},
	{"time.date", cel.StringType, dateSize, func(a *activation) ref.Val { return types.String(a.date()) }},
	{"time.zone", cel.StringType, stringSize, func(a *activation) ref.Val { return types.String(a.local.Location().String()) }},
	{"usage.last_minute", cel.IntType, nil, func(a *activation) ref.Val { return types.Int(a.in.Usage.LastMinute) }},
	{"usage.last_hour", cel.IntType, nil, func(a *activation) ref.Val { return types.Int(a.in.Usage.LastHour) }},
	{"usage.last_day", cel.IntType, nil, func(a *activation) ref.Val { return types.Int(a.in.Usage.LastDay) }},
	{"usage.active", cel.IntType, nil, func(a *activation) ref.Val { return types.Int(a.in.Usage.Active) }},
}

// variableID returns the place of a variable in variables, or -1. CEL
// resolves every variable read through it, so it is a switch, which is
// about twice as fast as a map here; a test keeps it in step with the
// table.
func variableID(name string) int {
	switch name {
	case "subject.spiffe_id":
		return 0
	case "subject.entry_id":
		return 1
	case "subject.purpose":
		return 2
	case "subject.owner":
		return 3
	case "subject.selectors":
		return 4
	case "subject.node_selectors":
		return 5
	case "subject.reputation":
		return 6
	case "request.scopes":
		return 7
	case "request.resource":
		return 8
	case "request.action":
		return 9
	case "request.reason":
		return 10
	case "request.ttl":
		return 11
	case "request.authorization_details":
		return 12
	case "time.now":
		return 13
	case "time.hour":
		return 14
	case "time.minute":
		return 15
	case "time.weekday":
		return 16
	case "time.date":
		return 17
	case "time.zone":
		return 18
	case "usage.last_minute":
		return 19
	case "usage.last_hour":
		return 20
	case "usage.last_day":
		return 21
	case "usage.active":
		return 22
	}
	return -1
}

// environment is the one CEL environment every policy compiles in. A
// cel.Env is immutable and safe for concurrent use.
var environment = sync.OnceValues(func() (*cel.Env, error) {
	opts := []cel.EnvOption{
		cel.DefaultUTCTimeZone(true),
		cel.OptionalTypes(),
		cel.ParserExpressionSizeLimit(maxExprLen),
		ext.Strings(),
		ext.Lists(ext.ListsMaxRangeSize(maxListRange)),
		ext.Sets(),
		ext.Math(),
		ext.Bindings(),
	}
	for _, v := range variables {
		opts = append(opts, cel.Variable(v.name, v.typ))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("build the CEL environment: %w", err)
	}
	return env, nil
})

// estimator tells CEL's static cost estimator how large the input can be.
type estimator struct{}

var sizes = func() map[string]*cost.SizeEstimate {
	m := map[string]*cost.SizeEstimate{}
	for _, v := range variables {
		if v.size != nil {
			m[v.name] = v.size
			if v.size.Elem != nil {
				m[v.name+".@items"] = v.size.Elem
			}
		}
	}
	return m
}()

func (estimator) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	switch p := n.Path(); len(p) {
	case 1:
		return sizes[p[0]]
	case 2:
		return sizes[p[0]+"."+p[1]]
	}
	return nil
}

func (estimator) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

// outputKind is what an expression must evaluate to.
type outputKind int

const (
	outputBool outputKind = iota
	outputString
	outputStringList
)

func (k outputKind) String() string {
	return [...]string{"bool", "string", "list(string)"}[k]
}

// accepts reports whether a checked expression of type t can produce k.
// dyn is accepted and checked when evaluated.
func (k outputKind) accepts(t *cel.Type) bool {
	if t.Kind() == types.DynKind {
		return true
	}
	switch k {
	case outputBool:
		return t.Kind() == types.BoolKind
	case outputString:
		return t.Kind() == types.StringKind
	default:
		if t.Kind() != types.ListKind || len(t.Parameters()) != 1 {
			return false
		}
		e := t.Parameters()[0].Kind()
		return e == types.StringKind || e == types.DynKind
	}
}

// program is one compiled expression.
type program struct {
	prg cel.Program
	// tracked is true when the static estimate could not bound the cost,
	// so the cost is tracked (and limited) while evaluating.
	tracked bool
	// native computes a bool expression of the native subset (see
	// native.go) without CEL's interpreter; nil for other expressions.
	native boolFn
	// narrow narrows the requested scopes by a scopes expression of the
	// native subset; nil for other expressions.
	narrow narrowFn
}

// compileExpr parses, type-checks and plans src, which must produce kind.
// Problems come back as CEL errors with expression-relative locations.
func compileExpr(env *cel.Env, src string, kind outputKind) (*program, []*cel.Error, error) {
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, iss.Errors(), nil
	}
	if !kind.accepts(ast.OutputType()) {
		return nil, nil, fmt.Errorf("must be a %s expression, got %s", kind, ast.OutputType())
	}
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	est, err := env.EstimateCost(ast, estimator{})
	tracked := err != nil || est.Max > costLimit
	if tracked {
		opts = append(opts, cel.CostLimit(costLimit))
	}
	p := &program{tracked: tracked}
	switch {
	case tracked:
	case kind == outputBool:
		p.native = compileNative(ast.NativeRep())
	case kind == outputStringList:
		p.narrow = compileNativeFilter(ast.NativeRep())
	}
	prg, err := env.Program(ast, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("plan: %w", err)
	}
	p.prg = prg
	return p, nil, nil
}

// eval runs the program; a CEL error value becomes an error.
func (p *program) eval(act *activation) (ref.Val, error) {
	var input any = act
	if !p.tracked {
		frame, err := act.frame()
		if err != nil {
			return nil, err
		}
		input = frame
	}
	out, _, err := p.prg.Eval(input)
	if err != nil {
		return nil, err
	}
	return out, nil
}
