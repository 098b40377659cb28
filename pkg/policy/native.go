package policy

import (
	"slices"
	"strings"
	"unicode/utf8"

	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/overloads"
	"cel.dev/cel-go/common/types"
)

// The native path runs `when` expressions written in a common subset of
// CEL as Go closures built from the type-checked AST, instead of walking
// CEL's interpreter: a decision over a large policy is dominated by that
// walk (each node resolves its variables by name, boxes its values and
// dispatches on runtime types), and the closures do the same work without
// any of it, nor any allocation.
//
// The subset is chosen so that no expression in it can fail: bool, int and
// string values and lists of strings, read from the declared variables
// (never the dyn authorization_details, durations or timestamps), combined
// with &&, ||, !, ?:, ==, !=, <, <=, >, >=, startsWith, endsWith,
// contains, in, size and comprehensions with a bool accumulator over a list
// of strings (exists, all, cel.bind of a bool). With nothing that can err,
// CEL's commutative && and || give the same answers as Go's short-circuit
// ones, so the closures compute exactly what CEL computes; a differential
// test holds them to that. Anything outside the subset, and any expression
// whose cost CEL cannot bound statically (and so tracks at run time), runs
// in CEL.

type (
	boolFn func(*activation) bool
	intFn  func(*activation) int64
	strFn  func(*activation) string
	listFn func(*activation) []string
)

// maxNativeDepth bounds the nesting of comprehensions the native path
// takes; the activation has a slot per level.
const maxNativeDepth = 4

// nativeCompiler turns one checked expression into a closure.
type nativeCompiler struct {
	ast *celast.AST
	// locals are the comprehension variables in scope, innermost last.
	locals []nativeLocal
	depth  int // comprehensions entered
}

// nativeLocal is a comprehension variable: the iteration variable (a
// string) or the accumulator (a bool) of the comprehension at slot.
type nativeLocal struct {
	name string
	slot int
	iter bool
}

// compileNative returns the closure computing a checked bool expression,
// or nil when the expression is outside the native subset.
func compileNative(a *celast.AST) boolFn {
	c := &nativeCompiler{ast: a}
	// A part that cannot be compiled may come back as a closure over nil
	// ones, with ok false: only a whole success counts.
	if fn, ok := c.boolExpr(a.Expr()); ok {
		return fn
	}
	return nil
}

// is reports whether e's checked type has kind k (a list of strings for
// types.ListKind).
func (c *nativeCompiler) is(e celast.Expr, k types.Kind) bool {
	t := c.ast.GetType(e.ID())
	if t == nil || t.Kind() != k {
		return false
	}
	if k == types.ListKind {
		p := t.Parameters()
		return len(p) == 1 && p[0].Kind() == types.StringKind
	}
	return true
}

// call returns e's function arguments, the target of a member call first,
// and the one overload the checker resolved it to.
func (c *nativeCompiler) call(e celast.Expr) ([]celast.Expr, string, bool) {
	if e.Kind() != celast.CallKind {
		return nil, "", false
	}
	ref := c.ast.ReferenceMap()[e.ID()]
	if ref == nil || len(ref.OverloadIDs) != 1 {
		return nil, "", false
	}
	call := e.AsCall()
	args := call.Args()
	if call.IsMemberFunction() {
		args = append([]celast.Expr{call.Target()}, args...)
	}
	return args, ref.OverloadIDs[0], true
}

// local finds a comprehension variable by name, innermost first.
func (c *nativeCompiler) local(name string) (nativeLocal, bool) {
	for i := len(c.locals) - 1; i >= 0; i-- {
		if c.locals[i].name == name {
			return c.locals[i], true
		}
	}
	return nativeLocal{}, false
}

func (c *nativeCompiler) boolExpr(e celast.Expr) (boolFn, bool) {
	if !c.is(e, types.BoolKind) {
		return nil, false
	}
	switch e.Kind() {
	case celast.LiteralKind:
		v, ok := e.AsLiteral().(types.Bool)
		return func(*activation) bool { return bool(v) }, ok
	case celast.IdentKind:
		// No declared variable is a bool; only accumulators are.
		if l, ok := c.local(e.AsIdent()); ok && !l.iter {
			return func(a *activation) bool { return a.accu[l.slot] }, true
		}
	case celast.ComprehensionKind:
		return c.comprehension(e.AsComprehension())
	case celast.CallKind:
		return c.boolCall(e)
	}
	return nil, false
}

func (c *nativeCompiler) boolCall(e celast.Expr) (boolFn, bool) {
	args, overload, ok := c.call(e)
	if !ok {
		return nil, false
	}
	switch overload {
	case overloads.LogicalAnd, overloads.LogicalOr:
		l, okl := c.boolExpr(args[0])
		r, okr := c.boolExpr(args[1])
		if !okl || !okr {
			return nil, false
		}
		if overload == overloads.LogicalAnd {
			return func(a *activation) bool { return l(a) && r(a) }, true
		}
		return func(a *activation) bool { return l(a) || r(a) }, true
	case overloads.LogicalNot:
		x, ok := c.boolExpr(args[0])
		return func(a *activation) bool { return !x(a) }, ok
	case overloads.NotStrictlyFalse: // a bool that cannot be an error is itself
		return c.boolExpr(args[0])
	case overloads.Conditional:
		cond, ok1 := c.boolExpr(args[0])
		t, ok2 := c.boolExpr(args[1])
		f, ok3 := c.boolExpr(args[2])
		return func(a *activation) bool {
			if cond(a) {
				return t(a)
			}
			return f(a)
		}, ok1 && ok2 && ok3
	case overloads.Equals, overloads.NotEquals:
		return c.equality(args, overload == overloads.NotEquals)
	case overloads.LessInt64, overloads.LessEqualsInt64, overloads.GreaterInt64, overloads.GreaterEqualsInt64:
		l, okl := c.intExpr(args[0])
		r, okr := c.intExpr(args[1])
		return compare(overload, l, r), okl && okr
	case overloads.LessString, overloads.LessEqualsString, overloads.GreaterString, overloads.GreaterEqualsString:
		l, okl := c.strExpr(args[0])
		r, okr := c.strExpr(args[1])
		return compare(overload, l, r), okl && okr
	case overloads.StartsWithString, overloads.EndsWithString, overloads.ContainsString:
		s, oks := c.strExpr(args[0])
		x, okx := c.strExpr(args[1])
		if !oks || !okx {
			return nil, false
		}
		test := map[string]func(string, string) bool{overloads.StartsWithString: strings.HasPrefix,
			overloads.EndsWithString: strings.HasSuffix, overloads.ContainsString: strings.Contains}[overload]
		return func(a *activation) bool { return test(s(a), x(a)) }, true
	case overloads.InList:
		return c.in(args[0], args[1])
	}
	return nil, false
}

// equality compiles == or != between two values of the same type.
func (c *nativeCompiler) equality(args []celast.Expr, negate bool) (boolFn, bool) {
	var eq boolFn
	switch {
	case c.is(args[0], types.BoolKind) && c.is(args[1], types.BoolKind):
		l, okl := c.boolExpr(args[0])
		r, okr := c.boolExpr(args[1])
		if !okl || !okr {
			return nil, false
		}
		eq = func(a *activation) bool { return l(a) == r(a) }
	case c.is(args[0], types.IntKind) && c.is(args[1], types.IntKind):
		l, okl := c.intExpr(args[0])
		r, okr := c.intExpr(args[1])
		if !okl || !okr {
			return nil, false
		}
		eq = func(a *activation) bool { return l(a) == r(a) }
	case c.is(args[0], types.StringKind) && c.is(args[1], types.StringKind):
		l, okl := c.strExpr(args[0])
		r, okr := c.strExpr(args[1])
		if !okl || !okr {
			return nil, false
		}
		eq = func(a *activation) bool { return l(a) == r(a) }
	default:
		return nil, false
	}
	if negate {
		return func(a *activation) bool { return !eq(a) }, true
	}
	return eq, true
}

// compare compiles one of the ordering overloads over ints or strings.
func compare[T int64 | string](overload string, l, r func(*activation) T) boolFn {
	switch overload {
	case overloads.LessInt64, overloads.LessString:
		return func(a *activation) bool { return l(a) < r(a) }
	case overloads.LessEqualsInt64, overloads.LessEqualsString:
		return func(a *activation) bool { return l(a) <= r(a) }
	case overloads.GreaterInt64, overloads.GreaterString:
		return func(a *activation) bool { return l(a) > r(a) }
	}
	return func(a *activation) bool { return l(a) >= r(a) }
}

// in compiles `x in list` for a string and a list of strings.
func (c *nativeCompiler) in(elem, list celast.Expr) (boolFn, bool) {
	x, okx := c.strExpr(elem)
	l, okl := c.listExpr(list)
	if !okx || !okl {
		return nil, false
	}
	return func(a *activation) bool {
		s := x(a)
		for _, e := range l(a) {
			if e == s {
				return true
			}
		}
		return false
	}, true
}

// comprehension compiles a fold with a bool accumulator over a list of
// strings, as CEL runs it: the loop condition is checked before each step,
// and the result sees the accumulator but not the iteration variable.
func (c *nativeCompiler) comprehension(cm celast.ComprehensionExpr) (boolFn, bool) {
	if cm.HasIterVar2() || c.depth >= maxNativeDepth {
		return nil, false
	}
	rng, ok1 := c.listExpr(cm.IterRange())
	init, ok2 := c.boolExpr(cm.AccuInit())
	if !ok1 || !ok2 {
		return nil, false
	}
	slot := c.depth
	c.depth++
	defer func() { c.depth--; c.locals = c.locals[:len(c.locals)-2] }()
	c.locals = append(c.locals, nativeLocal{name: cm.AccuVar(), slot: slot},
		nativeLocal{name: cm.IterVar(), slot: slot, iter: true})
	cond, ok1 := c.boolExpr(cm.LoopCondition())
	step, ok2 := c.boolExpr(cm.LoopStep())
	c.locals[len(c.locals)-1].name = "" // the result does not see the iteration variable
	result, ok3 := c.boolExpr(cm.Result())
	if !ok1 || !ok2 || !ok3 {
		return nil, false
	}
	return func(a *activation) bool {
		a.accu[slot] = init(a)
		for _, s := range rng(a) {
			a.iter[slot] = s
			if !cond(a) {
				break
			}
			a.accu[slot] = step(a)
		}
		return result(a)
	}, true
}

func (c *nativeCompiler) intExpr(e celast.Expr) (intFn, bool) {
	if !c.is(e, types.IntKind) {
		return nil, false
	}
	switch e.Kind() {
	case celast.LiteralKind:
		v, ok := e.AsLiteral().(types.Int)
		return func(*activation) int64 { return int64(v) }, ok
	case celast.IdentKind:
		if _, isLocal := c.local(e.AsIdent()); !isLocal {
			return nativeInt(e.AsIdent())
		}
	case celast.CallKind:
		args, overload, ok := c.call(e)
		if !ok {
			return nil, false
		}
		switch overload {
		case overloads.SizeList, overloads.SizeListInst:
			l, ok := c.listExpr(args[0])
			return func(a *activation) int64 { return int64(len(l(a))) }, ok
		case overloads.SizeString, overloads.SizeStringInst: // CEL counts code points
			s, ok := c.strExpr(args[0])
			return func(a *activation) int64 { return int64(utf8.RuneCountInString(s(a))) }, ok
		case overloads.Conditional:
			cond, ok1 := c.boolExpr(args[0])
			t, ok2 := c.intExpr(args[1])
			f, ok3 := c.intExpr(args[2])
			return func(a *activation) int64 {
				if cond(a) {
					return t(a)
				}
				return f(a)
			}, ok1 && ok2 && ok3
		}
	}
	return nil, false
}

func (c *nativeCompiler) strExpr(e celast.Expr) (strFn, bool) {
	if !c.is(e, types.StringKind) {
		return nil, false
	}
	switch e.Kind() {
	case celast.LiteralKind:
		v, ok := e.AsLiteral().(types.String)
		return func(*activation) string { return string(v) }, ok
	case celast.IdentKind:
		if l, isLocal := c.local(e.AsIdent()); isLocal {
			return func(a *activation) string { return a.iter[l.slot] }, l.iter
		}
		return nativeString(e.AsIdent())
	case celast.CallKind:
		args, overload, ok := c.call(e)
		if !ok || overload != overloads.Conditional {
			return nil, false
		}
		cond, ok1 := c.boolExpr(args[0])
		t, ok2 := c.strExpr(args[1])
		f, ok3 := c.strExpr(args[2])
		return func(a *activation) string {
			if cond(a) {
				return t(a)
			}
			return f(a)
		}, ok1 && ok2 && ok3
	}
	return nil, false
}

// listExpr compiles a list of strings: a declared variable, or a literal
// of string constants (an empty literal of any type, which cel.bind
// iterates over, included).
func (c *nativeCompiler) listExpr(e celast.Expr) (listFn, bool) {
	switch e.Kind() {
	case celast.IdentKind:
		if _, isLocal := c.local(e.AsIdent()); !isLocal && c.is(e, types.ListKind) {
			return nativeList(e.AsIdent())
		}
	case celast.ListKind:
		l := e.AsList()
		if len(l.OptionalIndices()) > 0 {
			return nil, false
		}
		var elems []string
		for _, x := range l.Elements() {
			if x.Kind() != celast.LiteralKind {
				return nil, false
			}
			s, ok := x.AsLiteral().(types.String)
			if !ok {
				return nil, false
			}
			elems = append(elems, string(s))
		}
		return func(*activation) []string { return elems }, true
	}
	return nil, false
}

// nativeInt reads a declared int variable.
func nativeInt(name string) (intFn, bool) {
	var fn intFn
	switch name {
	case "subject.reputation":
		fn = func(a *activation) int64 { return int64(a.in.Subject.Reputation) }
	case "time.hour":
		fn = func(a *activation) int64 { return int64(a.hour) }
	case "time.minute":
		fn = func(a *activation) int64 { return int64(a.minute) }
	case "time.weekday":
		fn = func(a *activation) int64 { return int64(a.weekday) }
	case "usage.last_minute":
		fn = func(a *activation) int64 { return int64(a.in.Usage.LastMinute) }
	case "usage.last_hour":
		fn = func(a *activation) int64 { return int64(a.in.Usage.LastHour) }
	case "usage.last_day":
		fn = func(a *activation) int64 { return int64(a.in.Usage.LastDay) }
	case "usage.active":
		fn = func(a *activation) int64 { return int64(a.in.Usage.Active) }
	}
	return fn, fn != nil
}

// nativeString reads a declared string variable.
func nativeString(name string) (strFn, bool) {
	var fn strFn
	switch name {
	case "subject.spiffe_id":
		fn = func(a *activation) string { return a.in.Subject.SPIFFEID }
	case "subject.entry_id":
		fn = func(a *activation) string { return a.in.Subject.EntryID }
	case "subject.purpose":
		fn = func(a *activation) string { return a.in.Subject.Purpose }
	case "subject.owner":
		fn = func(a *activation) string { return a.in.Subject.Owner }
	case "request.resource":
		fn = func(a *activation) string { return a.in.Request.Resource }
	case "request.action":
		fn = func(a *activation) string { return a.in.Request.Action }
	case "request.reason":
		fn = func(a *activation) string { return a.in.Request.Reason }
	case "time.date":
		fn = (*activation).date
	case "time.zone":
		fn = func(a *activation) string { return a.local.Location().String() }
	}
	return fn, fn != nil
}

// nativeList reads a declared list-of-strings variable.
func nativeList(name string) (listFn, bool) {
	var fn listFn
	switch name {
	case "subject.selectors":
		fn = func(a *activation) []string { return a.in.Subject.Selectors }
	case "subject.node_selectors":
		fn = func(a *activation) []string { return a.in.Subject.NodeSelectors }
	case "request.scopes":
		fn = func(a *activation) []string { return a.in.Request.Scopes }
	}
	return fn, fn != nil
}

// narrowFn narrows the requested scopes natively; see compileNativeFilter.
type narrowFn func(a *activation, requested []string) []string

// compileNativeFilter returns a native narrowing for a scopes expression
// of the form `L.filter(x, P)`, where L is a list of strings and P is in
// the native subset, or nil for any other expression. The filter keeps
// the elements of L that satisfy P, so a requested scope is kept when it
// is in L and satisfies P, which is tested without building the list.
func compileNativeFilter(a *celast.AST) narrowFn {
	e := a.Expr()
	c := &nativeCompiler{ast: a}
	if e.Kind() != celast.ComprehensionKind || !c.is(e, types.ListKind) {
		return nil
	}
	cm := e.AsComprehension()
	accu := cm.AccuVar()
	if cm.HasIterVar2() || !isEmptyList(cm.AccuInit()) || !isLiteral(cm.LoopCondition(), types.True) ||
		!isIdent(cm.Result(), accu) {
		return nil
	}
	// The step is `P ? accu + [x] : accu`.
	step, overload, ok := c.call(cm.LoopStep())
	if !ok || overload != overloads.Conditional || !isIdent(step[2], accu) {
		return nil
	}
	add, overload, ok := c.call(step[1])
	if !ok || overload != overloads.AddList || !isIdent(add[0], accu) || add[1].Kind() != celast.ListKind ||
		len(add[1].AsList().Elements()) != 1 || len(add[1].AsList().OptionalIndices()) != 0 ||
		!isIdent(add[1].AsList().Elements()[0], cm.IterVar()) {
		return nil
	}
	rng, ok := c.listExpr(cm.IterRange())
	if !ok {
		return nil
	}
	c.depth++
	c.locals = append(c.locals, nativeLocal{name: cm.IterVar(), slot: 0, iter: true})
	pred, ok := c.boolExpr(step[0])
	if !ok {
		return nil
	}
	return func(a *activation, requested []string) []string {
		if len(requested) == 0 {
			return nil
		}
		l := rng(a)
		narrowed := make([]string, 0, len(requested))
		for _, s := range requested {
			if slices.Contains(narrowed, s) || !slices.Contains(l, s) {
				continue
			}
			a.iter[0] = s
			if pred(a) {
				narrowed = append(narrowed, s)
			}
		}
		return narrowed
	}
}

func isIdent(e celast.Expr, name string) bool {
	return e.Kind() == celast.IdentKind && e.AsIdent() == name
}

func isLiteral(e celast.Expr, v types.Bool) bool {
	return e.Kind() == celast.LiteralKind && e.AsLiteral() == v
}

func isEmptyList(e celast.Expr) bool {
	return e.Kind() == celast.ListKind && len(e.AsList().Elements()) == 0
}
