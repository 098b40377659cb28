package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"cel.dev/cel-go/common/types"
)

// exprGen writes random CEL expressions, mostly in the native subset and
// sometimes outside it, over the declared variables.
type exprGen struct {
	r      *rand.Rand
	locals []string // string comprehension variables in scope
	bools  []string // bool comprehension variables in scope
	n      int
}

var (
	genStrings = []string{`''`, `'a'`, `'deploy:'`, `'deploy:web'`, `'prod/'`, `'é'`, `':read'`, `'pay'`}
	genInts    = []string{"-1", "0", "1", "3", "9", "300", "500", "1000"}
	genStrVars = []string{"subject.spiffe_id", "subject.entry_id", "subject.purpose", "subject.owner",
		"request.resource", "request.action", "request.reason", "time.date", "time.zone"}
	genIntVars  = []string{"subject.reputation", "time.hour", "time.minute", "time.weekday", "usage.last_minute", "usage.last_hour", "usage.last_day", "usage.active"}
	genListVars = []string{"subject.selectors", "subject.node_selectors", "request.scopes"}
	genCmp      = []string{"==", "!=", "<", "<=", ">", ">="}
)

func (g *exprGen) pick(s []string) string { return s[g.r.IntN(len(s))] }

func (g *exprGen) boolExpr(depth int) string {
	if depth <= 0 {
		switch g.r.IntN(4) {
		case 0:
			return g.pick([]string{"true", "false"})
		case 1:
			return "(" + g.intExpr(0) + " " + g.pick(genCmp) + " " + g.intExpr(0) + ")"
		case 2:
			return g.strExpr(0) + "." + g.pick([]string{"startsWith", "endsWith", "contains"}) + "(" + g.strExpr(0) + ")"
		default:
			if len(g.bools) > 0 {
				return g.pick(g.bools)
			}
			return "(" + g.strExpr(0) + " " + g.pick([]string{"==", "!=", "<", ">="}) + " " + g.strExpr(0) + ")"
		}
	}
	d := depth - 1
	switch g.r.IntN(12) {
	case 0:
		return "(" + g.boolExpr(d) + " && " + g.boolExpr(d) + ")"
	case 1:
		return "(" + g.boolExpr(d) + " || " + g.boolExpr(d) + ")"
	case 2:
		return "!(" + g.boolExpr(d) + ")"
	case 3:
		return "(" + g.boolExpr(d) + " ? " + g.boolExpr(d) + " : " + g.boolExpr(d) + ")"
	case 4:
		return "(" + g.strExpr(d) + " in " + g.listExpr() + ")"
	case 5, 6:
		v := fmt.Sprintf("v%d", g.n)
		g.n++
		macro := g.pick([]string{"exists", "all", "exists", "all", "exists_one"})
		l := g.listExpr()
		g.locals = append(g.locals, v)
		body := g.boolExpr(d)
		g.locals = g.locals[:len(g.locals)-1]
		return fmt.Sprintf("%s.%s(%s, %s)", l, macro, v, body)
	case 7:
		x := fmt.Sprintf("b%d", g.n)
		g.n++
		init := g.boolExpr(d)
		g.bools = append(g.bools, x)
		body := g.boolExpr(d)
		g.bools = g.bools[:len(g.bools)-1]
		return fmt.Sprintf("cel.bind(%s, %s, %s)", x, init, body)
	case 8:
		return "(" + g.boolExpr(d) + " == " + g.boolExpr(d) + ")"
	case 9:
		// Outside the subset: dyn values, durations, lists built at run time.
		return g.pick([]string{
			"request.authorization_details.all(d, d.type == 'payment_initiation')",
			"(request.ttl <= duration('15m'))",
			"(request.scopes.filter(s, s.endsWith(':read')).size() > 0)",
			"request.scopes.map(s, s + '!').exists(s, s == 'a!')",
			"[request.action, 'x'].exists(s, s == 'x')",
			"request.scopes.all(s, s.size() > 0 || request.ttl > duration('1s'))",
			"request.scopes.exists(s, s == 'deploy:web' && subject.selectors.exists(t, t < s))",
		})
	default:
		return "(" + g.intExpr(d) + " " + g.pick(genCmp) + " " + g.intExpr(d) + ")"
	}
}

func (g *exprGen) intExpr(depth int) string {
	switch g.r.IntN(5) {
	case 0:
		return g.pick(genInts)
	case 1:
		return "size(" + g.listExpr() + ")"
	case 2:
		return g.strExpr(0) + ".size()"
	case 3:
		if depth > 0 {
			return "(" + g.boolExpr(depth-1) + " ? " + g.intExpr(depth-1) + " : " + g.intExpr(depth-1) + ")"
		}
	}
	return g.pick(genIntVars)
}

func (g *exprGen) strExpr(depth int) string {
	switch g.r.IntN(4) {
	case 0:
		return g.pick(genStrings)
	case 1:
		if len(g.locals) > 0 {
			return g.pick(g.locals)
		}
	case 2:
		if depth > 0 {
			return "(" + g.boolExpr(depth-1) + " ? " + g.strExpr(depth-1) + " : " + g.strExpr(depth-1) + ")"
		}
	}
	return g.pick(genStrVars)
}

func (g *exprGen) listExpr() string {
	switch g.r.IntN(4) {
	case 0:
		return g.pick([]string{"[]", "['deploy:web']", "['a', 'deploy:web', 'repo:read', '']"})
	}
	return g.pick(genListVars)
}

// randomInput draws an input whose values the generated expressions
// often hit.
func randomInput(r *rand.Rand) Input {
	strs := []string{"", "a", "deploy:web", "repo:read", "prod/web", "pay", "é", "deploy:", "a:read"}
	pick := func() string { return strs[r.IntN(len(strs))] }
	list := func() []string {
		l := make([]string, r.IntN(4))
		for i := range l {
			l[i] = pick()
		}
		return l
	}
	return Input{
		Subject: Subject{SPIFFEID: pick(), EntryID: pick(), Purpose: pick(), Owner: pick(),
			Selectors: list(), NodeSelectors: list(), Reputation: []int{0, 299, 300, 500, 1000}[r.IntN(5)]},
		Request: Request{Scopes: list(), Resource: pick(), Action: pick(), Reason: pick(), TTL: time.Duration(r.IntN(3600)) * time.Second,
			AuthorizationDetails: []any{map[string]any{"type": "payment_initiation"}}},
		Now:   time.Date(2026, 12, 1+r.IntN(7), r.IntN(24), r.IntN(60), 0, 0, time.UTC),
		Usage: Usage{LastMinute: r.IntN(3), LastHour: r.IntN(12), LastDay: r.IntN(30), Active: r.IntN(2)},
	}
}

// TestNative_AgreesWithCEL holds the native path to CEL's own answers on
// random expressions and inputs.
func TestNative_AgreesWithCEL(t *testing.T) {
	env, err := environment()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	g := &exprGen{r: r}
	inputs := make([]Input, 12)
	for i := range inputs {
		inputs[i] = randomInput(r)
	}
	var native, total int
	for range 1500 {
		src := g.boolExpr(1 + r.IntN(4))
		p, celErrs, err := compileExpr(env, src, outputBool)
		if err != nil || len(celErrs) > 0 {
			t.Fatalf("compile %s: %v %v", src, err, celErrs)
		}
		total++
		if p.native == nil {
			continue
		}
		native++
		for _, in := range inputs {
			act, err := newActivation(&in, time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.eval(act)
			if err != nil {
				t.Fatalf("%s: CEL failed on an expression the native path takes: %v", src, err)
			}
			if got, want := p.native(act), bool(out.(types.Bool)); got != want {
				t.Fatalf("%s on %+v: native %v, CEL %v", src, in, got, want)
			}
			act.release()
		}
	}
	if native < total/2 {
		t.Errorf("only %d of %d generated expressions ran natively; the generator or the native path drifted", native, total)
	}
	t.Logf("%d of %d expressions ran natively", native, total)
}

// TestNative_FilterAgreesWithCEL does the same for scopes expressions.
func TestNative_FilterAgreesWithCEL(t *testing.T) {
	env, err := environment()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	g := &exprGen{r: r}
	var native int
	for range 300 {
		v := fmt.Sprintf("v%d", g.n)
		g.n++
		l := g.listExpr()
		if l == "[]" { // a list of dyn, which a scopes expression must not yield
			l = "request.scopes"
		}
		g.locals = append(g.locals, v)
		src := fmt.Sprintf("%s.filter(%s, %s)", l, v, g.boolExpr(r.IntN(3)))
		g.locals = g.locals[:0]
		p, celErrs, err := compileExpr(env, src, outputStringList)
		if err != nil || len(celErrs) > 0 {
			t.Fatalf("compile %s: %v %v", src, err, celErrs)
		}
		if p.narrow == nil {
			continue
		}
		native++
		viaCEL := *p
		viaCEL.narrow = nil
		for range 8 {
			in := randomInput(r)
			act, err := newActivation(&in, time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			want, err := narrow(&viaCEL, act, in.Request.Scopes)
			if err != nil {
				t.Fatalf("%s: %v", src, err)
			}
			got, _ := narrow(p, act, in.Request.Scopes)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("%s on scopes %q (-CEL +native):\n%s", src, in.Request.Scopes, diff)
			}
			act.release()
		}
	}
	if native < 100 {
		t.Errorf("only %d of 300 filters ran natively", native)
	}
}

func TestNative_CoversTheUsualRulesAndLeavesTheRestToCEL(t *testing.T) {
	env, err := environment()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		src    string
		kind   outputKind
		native bool
	}{
		{`request.scopes.exists(s, s.startsWith("deploy:")) && time.weekday >= 1 && time.hour < 18`, outputBool, true},
		{`request.action == "delete" && (request.resource.startsWith("prod/") || request.scopes.exists(s, s.endsWith(":delete")))`, outputBool, true},
		{`subject.reputation < 300 || request.action in ["a", "b"]`, outputBool, true},
		{`cel.bind(p, subject.purpose == "x", p || usage.active > 2)`, outputBool, true},
		{`request.scopes.filter(s, s.startsWith("deploy:"))`, outputStringList, true},
		{`request.authorization_details.all(d, d.type == "payment_initiation")`, outputBool, false},
		{`request.ttl <= duration("15m")`, outputBool, false},
		{`request.scopes.exists_one(s, s == "a")`, outputBool, false},
		{`request.scopes.map(s, s + "x").exists(s, s == "ax")`, outputBool, false},
		{`request.scopes.filter(s, s.startsWith("deploy:")).map(s, s)`, outputStringList, false},
		{`["a"]`, outputStringList, false},
		// Too costly to bound statically: tracked by CEL at run time.
		{`request.scopes.exists(a, request.scopes.exists(b, subject.selectors.exists(c, a + b + c == request.reason)))`, outputBool, false},
	}
	for _, tt := range tests {
		p, celErrs, err := compileExpr(env, tt.src, tt.kind)
		if err != nil || len(celErrs) > 0 {
			t.Fatalf("compile %s: %v %v", tt.src, err, celErrs)
		}
		if got := p.native != nil || p.narrow != nil; got != tt.native {
			t.Errorf("%s: native = %v, want %v", tt.src, got, tt.native)
		}
	}
}
