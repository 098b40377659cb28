package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }

// compileErrors compiles files and returns the problems as strings.
func compileErrors(t *testing.T, files map[string]string) []string {
	t.Helper()
	in := map[string][]byte{}
	for name, data := range files {
		in[name] = []byte(data)
	}
	set, err := Compile(in)
	if err == nil {
		t.Fatalf("Compile succeeded with rules %v, want problems", set.Rules())
	}
	var ce *CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("Compile error is %T (%v), want *CompileError", err, err)
	}
	got := make([]string, len(ce.Problems))
	for i, p := range ce.Problems {
		got[i] = p.String()
	}
	if diff := cmp.Diff(strings.Join(got, "\n"), err.Error()); diff != "" {
		t.Errorf("Error() differs from the problems (-problems +Error):\n%s", diff)
	}
	return got
}

func TestCompile_ReportsProblemsAtTheirPlaceInTheFile(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{
			name: "CEL syntax error",
			doc:  lines("version: 1", "rules:", "  - name: r", `    when: "1 +"`, "    effect: allow"),
			want: []string{`p.yaml:4:15: rules[0].when: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}`},
		},
		{
			name: "type error inside a block scalar",
			doc: lines("version: 1", "rules:", "  - name: r", "    when: |",
				`      request.action == "x" &&`, `        subject.reputation > "high"`, "    effect: allow"),
			want: []string{"p.yaml:6:28: rules[0].when: found no matching overload for '_>_' applied to '(int, string)'"},
		},
		{
			name: "unknown field is a typo the checker names",
			doc:  lines("version: 1", "rules:", "  - name: r", "    when: request.scope.exists(s, s == 'x')", "    effect: allow"),
			want: []string{"p.yaml:4:18: rules[0].when: undeclared reference to 'request.scope' (did you mean 'request.scopes'?)"},
		},
		{
			name: "unknown variable in a double-quoted scalar with escapes",
			doc:  lines("version: 1", "rules:", "  - name: r", `    when: "request.action == \"a\" && foo"`, "    effect: allow"),
			want: []string{"p.yaml:4:39: rules[0].when: undeclared reference to 'foo'"},
		},
		{
			name: "when must be bool, scopes list(string), reason_expr string",
			doc: lines("version: 1", "rules:", "  - name: r", "    when: subject.reputation", "    effect: allow",
				"    scopes: request.resource", "    reason_expr: usage.active"),
			want: []string{
				"p.yaml:4:11: rules[0].when: must be a bool expression, got int",
				"p.yaml:6:13: rules[0].scopes: must be a list(string) expression, got string",
				"p.yaml:7:18: rules[0].reason_expr: must be a string expression, got int",
			},
		},
		{
			name: "duplicate rule names",
			doc: lines("version: 1", "rules:", "  - {name: r, when: 'true', effect: allow}",
				"  - {name: r, when: 'true', effect: deny}"),
			want: []string{`p.yaml:4:12: rules[1].name: duplicate rule name "r" (first defined at p.yaml:3:12)`},
		},
		{
			name: "unknown keys, and the rest of the rule still checked",
			doc: lines("version: 1", "rule_s: []", "rules:", "  - name: r", "    when: nope", "    effect: permit",
				"    max_tll: 5m"),
			want: []string{
				"p.yaml:2:1: rule_s: unknown key",
				"p.yaml:5:11: rules[0].when: undeclared reference to 'nope'",
				`p.yaml:6:13: rules[0].effect: must be one of allow, deny, require_approval; got "permit"`,
				"p.yaml:7:5: rules[0].max_tll: unknown key",
			},
		},
		{
			name: "missing name, when and effect",
			doc:  lines("version: 1", "rules:", "  - reason: nothing else"),
			want: []string{
				"p.yaml:3:5: rules[0].name: missing; every rule needs a unique name",
				"p.yaml:3:5: rules[0].effect: missing; must be one of allow, deny, require_approval",
				"p.yaml:3:5: rules[0].when: missing; every rule needs a CEL bool expression",
			},
		},
		{
			name: "bad rule name",
			doc:  lines("version: 1", "rules:", "  - {name: 'no spaces', when: 'true', effect: deny}"),
			want: []string{`p.yaml:3:12: rules[0].name: must be 1 to 128 letters, digits, ".", "_", ":" or "-", starting with a letter or digit; got "no spaces"`},
		},
		{
			name: "settings that do not fit the effect",
			doc: lines("version: 1", "rules:",
				"  - {name: a, when: 'true', effect: deny, max_ttl: 5m}",
				"  - {name: b, when: 'true', effect: require_approval, scopes: request.scopes}",
				"  - {name: c, when: 'true', effect: allow, critical: true}",
				"  - {name: d, when: 'true', effect: allow, rate_limit: true}",
				"  - name: e",
				"    when: 'true'",
				"    effect: require_approval",
				"    rate_limit: true"),
			want: []string{
				"p.yaml:3:52: rules[0].max_ttl: only allow rules take max_ttl; this rule's effect is deny",
				"p.yaml:4:63: rules[1].scopes: only allow rules take scopes; this rule's effect is require_approval",
				"p.yaml:5:54: rules[2].critical: only require_approval rules take critical; this rule's effect is allow",
				"p.yaml:6:56: rules[3].rate_limit: only deny rules take rate_limit; this rule's effect is allow",
				"p.yaml:10:17: rules[4].rate_limit: only deny rules take rate_limit; this rule's effect is require_approval",
			},
		},
		{
			name: "bad durations and both reasons",
			doc: lines("version: 1", "rules:",
				"  - {name: a, when: 'true', effect: allow, max_ttl: ten}",
				"  - {name: b, when: 'true', effect: allow, max_ttl: -5m}",
				"  - {name: c, when: 'true', effect: deny, reason: x, reason_expr: '\"y\"'}"),
			want: []string{
				`p.yaml:3:53: rules[0].max_ttl: "ten" is not a duration (use a number with a unit: 90s, 10m, 1h)`,
				"p.yaml:4:53: rules[1].max_ttl: must be positive; got -5m",
				"p.yaml:5:67: rules[2].reason_expr: give reason or reason_expr, not both",
			},
		},
		{
			name: "wrong YAML types and duplicate keys",
			doc: lines("version: 1", "rules:", "  - name: r", "    when: [a]", "    effect: allow",
				"    critical: maybe", "    effect: deny", "    rate_limit: 10"),
			want: []string{
				"p.yaml:4:11: rules[0].when: must be a string, got a list",
				`p.yaml:6:15: rules[0].critical: must be a boolean (true or false), got "maybe"`,
				"p.yaml:7:5: rules[0].effect: duplicate key (first set on line 5)",
				`p.yaml:8:17: rules[0].rate_limit: must be a boolean (true or false), got "10"`,
			},
		},
		{
			name: "version",
			doc:  lines("version: 2", "rules: []"),
			want: []string{"p.yaml:1:10: version: 2 is not supported (supported versions: 1)"},
		},
		{
			name: "missing version has no position",
			doc:  lines("rules: []"),
			want: []string{`p.yaml: version: missing; the file must start with "version: 1" (supported versions: 1)`},
		},
		{
			name: "YAML syntax error has a line only",
			doc:  lines("version: 1", "rules:", "  - name: a: b", "    when: x"),
			want: []string{"p.yaml:3: invalid YAML: mapping values are not allowed in this context"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := compileErrors(t, map[string]string{"p.yaml": tt.doc})
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCompile_ReportsProblemsOfEveryFileTogether(t *testing.T) {
	got := compileErrors(t, map[string]string{
		"b.yaml": lines("version: 1", "rules:", "  - {name: shared, when: 'true', effect: deny}", "  - {name: b2, when: x, effect: deny}"),
		"a.yaml": lines("version: 1", "rules:", "  - {name: shared, when: 'true', effect: allow}", "  - {name: a2, when: 1, effect: deny}"),
	})
	want := []string{
		"a.yaml:4:22: rules[1].when: must be a bool expression, got int",
		`b.yaml:3:12: rules[0].name: duplicate rule name "shared" (first defined at a.yaml:3:12)`,
		"b.yaml:4:22: rules[1].when: undeclared reference to 'x'",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}

func TestCompile_NoFilesIsAnError(t *testing.T) {
	if _, err := Compile(nil); err == nil {
		t.Error("Compile(nil) succeeded, want an error")
	}
}

func TestCompile_AcceptsAValidPolicy(t *testing.T) {
	set, err := Compile(map[string][]byte{"p.yaml": []byte(lines(
		"version: 1",
		"rules:",
		"  - name: deploy",
		"    when: request.scopes.exists(s, s.startsWith('deploy:'))",
		"    effect: allow",
		"    max_ttl: 15m",
		"    scopes: request.scopes.filter(s, s.startsWith('deploy:'))",
		"    reason: deploys are fine",
		"  - name: delete",
		"    when: request.action == 'delete'",
		"    effect: require_approval",
		"    critical: true",
		"    reason_expr: \"'deleting ' + request.resource\"",
		"  - {name: rest, when: 'true', effect: deny}",
	))})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if diff := cmp.Diff([]string{"deploy", "delete", "rest"}, set.Rules()); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	if got := set.rules[0].maxTTL; got != 15*time.Minute {
		t.Errorf("max_ttl = %v, want 15m", got)
	}
}

// writeFile replaces path atomically (a hidden temporary file renamed over
// it), so a watcher never reads half a file.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func rulesFile(names ...string) string {
	var b strings.Builder
	b.WriteString("version: 1\nrules:\n")
	for _, n := range names {
		b.WriteString("  - {name: " + n + ", when: 'true', effect: deny}\n")
	}
	return b.String()
}

func TestLoad_DirectoryReadsYAMLFilesInLexicalOrder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "b.yaml"), rulesFile("b1", "b2"))
	writeFile(t, filepath.Join(dir, "10-a.yaml"), rulesFile("ten"))
	writeFile(t, filepath.Join(dir, "a.yaml"), rulesFile("a1"))
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), "not: [valid")
	writeFile(t, filepath.Join(dir, "notes.txt"), "not: [valid")
	writeFile(t, filepath.Join(dir, "sub", "c.yaml"), rulesFile("sub"))
	if err := os.Symlink(filepath.Join(dir, "a.yaml"), filepath.Join(dir, "z-link.yaml")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "y.yaml"), rulesFile("y1"))
	set, err := Load(dir)
	if err == nil {
		t.Fatalf("Load succeeded with %v; the symlink repeats rule a1", set.Rules())
	}
	if !strings.Contains(err.Error(), filepath.Join(dir, "z-link.yaml")+`:3:12: rules[0].name: duplicate rule name "a1"`) {
		t.Errorf("Load error = %v, want the symlinked file's duplicate", err)
	}
	if err := os.Remove(filepath.Join(dir, "z-link.yaml")); err != nil {
		t.Fatal(err)
	}
	set, err = Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if diff := cmp.Diff([]string{"ten", "a1", "b1", "b2", "y1"}, set.Rules()); diff != "" {
		t.Errorf("rule order (-want +got):\n%s", diff)
	}
}

func TestLoad_RefusesWhatIsNotAPolicy(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Mkdir(dangling, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dangling, "a.yaml"), rulesFile("a"))
	if err := os.Symlink(filepath.Join(dir, "gone.yaml"), filepath.Join(dangling, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	writeFile(t, big, "version: 1\n# "+strings.Repeat("x", maxFileSize)+"\n")
	tests := map[string]struct{ path, want string }{
		"missing path":    {filepath.Join(dir, "nope.yaml"), "no such file or directory"},
		"empty directory": {empty, "no *.yaml files in directory " + empty},
		"oversized file":  {big, "larger than 1048576 bytes"},
		"dangling link":   {dangling, "b.yaml: no such file or directory"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Load(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load(%s) error = %v, want one containing %q", tt.path, err, tt.want)
			}
		})
	}
}
