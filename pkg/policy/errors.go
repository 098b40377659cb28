package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Problem is one thing wrong with a policy, located in its file.
type Problem struct {
	File string
	// Line and Column are 1-based; Column counts characters. Column is 0
	// when only the line is known (YAML syntax errors), and both are 0 when
	// the problem concerns the whole file.
	Line, Column int
	// Path is the setting at fault, as pkg/config spells it
	// ("rules[2].when"); "" for problems with the file as a whole.
	Path    string
	Message string
}

// String formats p as "file:line:column: path: message", dropping the parts
// that are not known.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
		if p.Column > 0 {
			fmt.Fprintf(&b, ":%d", p.Column)
		}
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// CompileError lists every problem found while loading a policy, so an
// operator fixes all of them in one pass.
type CompileError struct {
	// Problems are ordered by file, then position.
	Problems []Problem
}

// Error lists the problems one per line.
func (e *CompileError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// problems collects Problems while a policy compiles.
type problems struct {
	items []Problem
}

func (ps *problems) add(file string, pos position, path, format string, args ...any) {
	ps.items = append(ps.items, Problem{
		File:    file,
		Line:    pos.line,
		Column:  pos.column,
		Path:    path,
		Message: fmt.Sprintf(format, args...),
	})
}

// err returns nil or a *CompileError with the problems sorted by file and
// position; problems without a position come first in their file.
func (ps *problems) err() error {
	if len(ps.items) == 0 {
		return nil
	}
	items := slices.Clone(ps.items)
	slices.SortStableFunc(items, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return &CompileError{Problems: items}
}

// EvalError is a rule that could not be evaluated. The decision that comes
// with it is always a denial.
type EvalError struct {
	// Rule is the rule that failed; "" when the input itself was refused.
	Rule string
	Err  error
}

func (e *EvalError) Error() string {
	if e.Rule == "" {
		return "policy input: " + e.Err.Error()
	}
	return "policy rule " + e.Rule + ": " + e.Err.Error()
}

func (e *EvalError) Unwrap() error { return e.Err }
