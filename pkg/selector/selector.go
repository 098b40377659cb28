// Package selector owns workload and node selectors: "type:value" pairs that
// attestors produce and registration entries require.
package selector

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// MaxLen bounds a selector's text form, so hostile input cannot grow indexes.
const MaxLen = 1024

// Selector is one attested property, such as unix:uid:1000 (type "unix",
// value "uid:1000").
type Selector struct {
	typ   string
	value string
}

// New returns a selector after checking both parts are present.
func New(typ, value string) (Selector, error) {
	switch {
	case typ == "":
		return Selector{}, errors.New("selector type is empty")
	case strings.Contains(typ, ":"):
		return Selector{}, fmt.Errorf("selector type %q contains a colon", typ)
	case value == "":
		return Selector{}, fmt.Errorf("selector %q has an empty value", typ)
	case len(typ)+1+len(value) > MaxLen:
		return Selector{}, fmt.Errorf("selector is longer than %d bytes", MaxLen)
	case strings.ContainsAny(typ+value, "\x00\n\r"):
		return Selector{}, errors.New("selector contains a control character")
	}
	return Selector{typ: typ, value: value}, nil
}

// Parse reads "type:value"; the type ends at the first colon, so the value
// may hold colons of its own (unix:uid:1000).
func Parse(s string) (Selector, error) {
	typ, value, ok := strings.Cut(s, ":")
	if !ok {
		return Selector{}, fmt.Errorf("selector %q is not of the form type:value", s)
	}
	return New(typ, value)
}

// Must is Parse for constants in code and tests; it panics on error.
func Must(s string) Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// Type is the attestor that produced the selector (unix, k8s, tpm, ...).
func (s Selector) Type() string { return s.typ }

// Value is everything after the type.
func (s Selector) Value() string { return s.value }

// String is the "type:value" form.
func (s Selector) String() string { return s.typ + ":" + s.value }

// IsZero reports whether s is the zero Selector.
func (s Selector) IsZero() bool { return s.typ == "" }

// Set is an immutable, sorted, duplicate-free set of selectors.
type Set struct {
	items []string // sorted "type:value" strings
}

// NewSet builds a set from selectors.
func NewSet(sels ...Selector) Set {
	items := make([]string, 0, len(sels))
	for _, s := range sels {
		items = append(items, s.String())
	}
	return newSet(items)
}

// ParseSet parses "type:value" strings; the first bad one is reported.
func ParseSet(strs []string) (Set, error) {
	items := make([]string, 0, len(strs))
	for i, s := range strs {
		sel, err := Parse(s)
		if err != nil {
			return Set{}, fmt.Errorf("selectors[%d]: %w", i, err)
		}
		items = append(items, sel.String())
	}
	return newSet(items), nil
}

func newSet(items []string) Set {
	sort.Strings(items)
	out := items[:0]
	for i, s := range items {
		if i == 0 || s != items[i-1] {
			out = append(out, s)
		}
	}
	return Set{items: out}
}

// Len is the number of selectors in the set.
func (s Set) Len() int { return len(s.items) }

// Strings returns the sorted "type:value" forms; the caller may keep it.
func (s Set) Strings() []string { return append([]string(nil), s.items...) }

// Contains reports whether sel is in the set.
func (s Set) Contains(sel Selector) bool {
	str := sel.String()
	i := sort.SearchStrings(s.items, str)
	return i < len(s.items) && s.items[i] == str
}

// Includes reports whether every selector of sub is in s: the rule by which a
// workload (s) matches an entry (sub). An empty sub matches nothing, so an
// entry without selectors can never be served.
func (s Set) Includes(sub Set) bool {
	if len(sub.items) == 0 {
		return false
	}
	i := 0
	for _, want := range sub.items {
		for i < len(s.items) && s.items[i] < want {
			i++
		}
		if i == len(s.items) || s.items[i] != want {
			return false
		}
	}
	return true
}

// Equal reports whether both sets hold the same selectors.
func (s Set) Equal(o Set) bool {
	if len(s.items) != len(o.items) {
		return false
	}
	for i := range s.items {
		if s.items[i] != o.items[i] {
			return false
		}
	}
	return true
}

// Key is a canonical string for the whole set, usable as a map key.
func (s Set) Key() string { return strings.Join(s.items, "\x00") }

// Union returns the selectors in either set.
func (s Set) Union(o Set) Set {
	items := make([]string, 0, len(s.items)+len(o.items))
	items = append(items, s.items...)
	items = append(items, o.items...)
	return newSet(items)
}
