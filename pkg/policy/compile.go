package policy

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"time"

	"cel.dev/cel-go/cel"
)

// Set is a compiled policy: its rules in evaluation order, every expression
// type-checked and planned. A Set is immutable and safe for concurrent use.
type Set struct {
	rules []*rule
}

// rule is one compiled rule.
type rule struct {
	name       string
	effect     Effect
	when       *program
	reason     string   // as given, or the default reason
	reasonExpr *program // nil unless reason_expr was given
	maxTTL     time.Duration
	scopes     *program // nil unless scopes was given
	critical   bool
	// rateLimited marks a deny rule declared `rate_limit: true`.
	rateLimited bool
}

// Rules returns the rule names in evaluation order.
func (s *Set) Rules() []string {
	names := make([]string, len(s.rules))
	for i, r := range s.rules {
		names[i] = r.name
	}
	return names
}

// Compile compiles the policy files in files, keyed by the name errors
// should give them (usually the path). Files are taken in lexical order of
// their names, rules in file order. Any problem fails the whole policy: the
// error is a *CompileError listing every problem with its file, line and
// column.
func Compile(files map[string][]byte) (*Set, error) {
	if len(files) == 0 {
		return nil, errors.New("policy: no policy files")
	}
	env, err := environment()
	if err != nil {
		return nil, err
	}
	c := &compiler{env: env, seen: map[string]string{}}
	set := &Set{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		f := parseFile(name, files[name], &c.ps)
		if f == nil {
			continue
		}
		for i, doc := range f.rules {
			if f.skipRule(i) {
				continue
			}
			if r := c.rule(f, i, doc); r != nil {
				set.rules = append(set.rules, r)
			}
		}
	}
	if err := c.ps.err(); err != nil {
		return nil, err
	}
	return set, nil
}

// compiler carries the state of one Compile.
type compiler struct {
	env *cel.Env
	ps  problems
	// seen maps each rule name to where it was first defined.
	seen map[string]string
}

// ruleName restricts names to what is safe in logs, metrics labels and
// audit records.
var ruleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// rule validates and compiles rule i of f; nil when it has problems, which
// are recorded.
func (c *compiler) rule(f *parsedFile, i int, d ruleDoc) *rule {
	before := len(c.ps.items)
	r := &rule{name: d.Name, reason: d.Reason, critical: d.Critical, rateLimited: d.RateLimit}
	skip := func(field string) bool { return f.skipField(i, field) }
	if !skip("name") {
		c.checkName(f, i, d.Name)
	}
	effectOK := false
	if !skip("effect") {
		r.effect, effectOK = c.effect(f, i, d.Effect)
	}
	switch {
	case skip("when"):
	case d.When == "":
		path, _ := f.field(i, "when")
		c.ps.add(f.name, f.rulePos(i), path, "missing; every rule needs a CEL bool expression")
	default:
		r.when = c.expr(f, i, "when", d.When, outputBool)
	}
	if d.ReasonExpr != "" && !skip("reason_expr") {
		if d.Reason != "" {
			c.problem(f, i, "reason_expr", "give reason or reason_expr, not both")
		}
		r.reasonExpr = c.expr(f, i, "reason_expr", d.ReasonExpr, outputString)
	}
	if d.MaxTTL != "" && !skip("max_ttl") {
		r.maxTTL = c.maxTTL(f, i, d.MaxTTL)
	}
	if d.Scopes != "" && !skip("scopes") {
		r.scopes = c.expr(f, i, "scopes", d.Scopes, outputStringList)
	}
	if effectOK {
		c.checkEffectFields(f, i, d, r.effect)
	}
	if r.reason == "" {
		// Computed once here rather than on every decision; a reason_expr
		// that yields "" falls back to it too.
		r.reason = defaultReason(r.effect, r.name)
	}
	if len(c.ps.items) > before || f.reported != nil {
		return nil
	}
	return r
}

func (c *compiler) problem(f *parsedFile, i int, field, format string, args ...any) {
	path, n := f.field(i, field)
	pos := nodePos(n)
	if n == nil {
		pos = f.rulePos(i)
	}
	c.ps.add(f.name, pos, path, format, args...)
}

func (c *compiler) checkName(f *parsedFile, i int, name string) {
	path, n := f.field(i, "name")
	switch {
	case name == "":
		c.ps.add(f.name, f.rulePos(i), path, "missing; every rule needs a unique name")
	case !ruleName.MatchString(name):
		c.ps.add(f.name, nodePos(n), path, `must be 1 to 128 letters, digits, ".", "_", ":" or "-", starting with a letter or digit; got %q`, name)
	default:
		at := fmt.Sprintf("%s:%d:%d", f.name, nodePos(n).line, nodePos(n).column)
		if first, dup := c.seen[name]; dup {
			c.ps.add(f.name, nodePos(n), path, "duplicate rule name %q (first defined at %s)", name, first)
			return
		}
		c.seen[name] = at
	}
}

func (c *compiler) effect(f *parsedFile, i int, s string) (Effect, bool) {
	const choices = "allow, deny, require_approval"
	if s == "" {
		path, _ := f.field(i, "effect")
		c.ps.add(f.name, f.rulePos(i), path, "missing; must be one of %s", choices)
		return Deny, false
	}
	e, ok := parseEffect(s)
	if !ok {
		c.problem(f, i, "effect", "must be one of %s; got %q", choices, s)
	}
	return e, ok
}

func (c *compiler) maxTTL(f *parsedFile, i int, s string) time.Duration {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		c.problem(f, i, "max_ttl", "%q is not a duration (use a number with a unit: 90s, 10m, 1h)", s)
		return 0
	case d <= 0:
		c.problem(f, i, "max_ttl", "must be positive; got %s", s)
		return 0
	}
	return d
}

// checkEffectFields rejects settings that mean nothing for the rule's
// effect, so a misplaced one is not silently ignored.
func (c *compiler) checkEffectFields(f *parsedFile, i int, d ruleDoc, effect Effect) {
	if d.MaxTTL != "" && effect != Allow {
		c.problem(f, i, "max_ttl", "only allow rules take max_ttl; this rule's effect is %s", effect)
	}
	if d.Scopes != "" && effect != Allow {
		c.problem(f, i, "scopes", "only allow rules take scopes; this rule's effect is %s", effect)
	}
	if d.Critical && effect != RequireApproval {
		c.problem(f, i, "critical", "only require_approval rules take critical; this rule's effect is %s", effect)
	}
	if d.RateLimit && effect != Deny {
		c.problem(f, i, "rate_limit", "only deny rules take rate_limit; this rule's effect is %s", effect)
	}
}

// expr compiles one of rule i's expressions, reporting CEL's problems at
// their place in the file.
func (c *compiler) expr(f *parsedFile, i int, field, src string, kind outputKind) *program {
	path, n := f.field(i, field)
	prg, celErrs, err := compileExpr(c.env, src, kind)
	for _, e := range celErrs {
		pos := nodePos(n)
		if n != nil && e.Location != nil && e.Location.Line() > 0 {
			pos = f.src.exprPosition(n, e.Location.Line(), e.Location.Column())
		}
		c.ps.add(f.name, pos, path, "%s", e.Message)
	}
	if err != nil {
		c.ps.add(f.name, nodePos(n), path, "%s", err)
	}
	return prg
}
