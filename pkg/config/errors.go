// Package config owns the strict, versioned YAML decoding the nhid binaries
// share: a config file starts with `version: N`, unknown keys are rejected,
// and every problem is reported at once with its dotted path
// (`server.ca.key_type: must be one of ec-p256, ec-p384, rsa-2048`), so an
// operator fixes a file in one pass instead of one error per restart.
package config

import (
	"fmt"
	"sort"
	"strings"
)

// Errors collects configuration problems, each tied to the dotted path of
// the setting at fault. The zero value is ready to use.
type Errors struct {
	items []problem
}

type problem struct {
	path string
	msg  string
	// line and column locate the problem in the YAML document; 0 when the
	// problem was found after decoding, where no position is known.
	line, column int
	seq          int
}

// Addf records a problem with the setting at path.
func (e *Errors) Addf(path, format string, args ...any) {
	e.addAt(0, 0, path, format, args...)
}

func (e *Errors) addAt(line, column int, path, format string, args ...any) {
	e.items = append(e.items, problem{
		path:   path,
		msg:    fmt.Sprintf(format, args...),
		line:   line,
		column: column,
		seq:    len(e.items),
	})
}

// Len is the number of problems recorded so far.
func (e *Errors) Len() int { return len(e.items) }

// Err returns nil when no problem was recorded, otherwise one error listing
// every problem on its own line as "path: problem". Problems found in the
// document come first in document order; the rest follow in the order they
// were added, which callers keep close to document order by converting
// sections in file order.
func (e *Errors) Err() error {
	if len(e.items) == 0 {
		return nil
	}
	items := append([]problem(nil), e.items...)
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if (a.line == 0) != (b.line == 0) {
			return a.line != 0
		}
		if a.line != b.line {
			return a.line < b.line
		}
		if a.column != b.column {
			return a.column < b.column
		}
		return a.seq < b.seq
	})
	return &listError{items: items}
}

// listError is the error Err returns; its message is the problem list.
type listError struct {
	items []problem
}

func (l *listError) Error() string {
	var b strings.Builder
	for i, p := range l.items {
		if i > 0 {
			b.WriteByte('\n')
		}
		if p.path != "" {
			b.WriteString(p.path)
			b.WriteString(": ")
		}
		b.WriteString(p.msg)
	}
	return b.String()
}

// Join appends path segments with dots, so callers build paths the same way
// the decoder reports them ("server" + "ca" → "server.ca").
func Join(path string, elems ...string) string {
	for _, el := range elems {
		if path == "" {
			path = el
			continue
		}
		path += "." + el
	}
	return path
}

// Index is the path of the i-th element of the list at path ("x[2]").
func Index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}
