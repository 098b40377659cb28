package policy

import (
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/nhid/nhid/pkg/config"
)

// position is a 1-based line and column (in characters) in a policy file;
// zero parts are unknown.
type position struct{ line, column int }

func nodePos(n *yaml.Node) position {
	if n == nil {
		return position{}
	}
	return position{line: n.Line, column: n.Column}
}

// maxIndexedNodes bounds the walk over a document's nodes, which follows
// aliases: a file of nested aliases must not make loading explode.
const maxIndexedNodes = 100_000

// nodeIndex finds the YAML nodes behind the dotted paths pkg/config reports
// ("rules[2].when"), so that every problem gets a line and column.
type nodeIndex struct {
	root *yaml.Node
	// keys holds, per path, every key node spelled that way in document
	// order (more than one when a key is duplicated). A list item's "key"
	// is the item itself.
	keys map[string][]*yaml.Node
	// values holds the first value node of each path.
	values  map[string]*yaml.Node
	visited int
}

func indexDocument(root *yaml.Node) *nodeIndex {
	ix := &nodeIndex{root: root, keys: map[string][]*yaml.Node{}, values: map[string]*yaml.Node{}}
	ix.walk(root, "")
	return ix
}

func (ix *nodeIndex) walk(n *yaml.Node, path string) {
	n = resolveAlias(n)
	if ix.visited++; ix.visited > maxIndexedNodes {
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		ix.walkMapping(n, path)
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := config.Index(path, i)
			ix.record(item, resolveAlias(item), p)
			ix.walk(item, p)
		}
	}
}

func (ix *nodeIndex) walkMapping(n *yaml.Node, path string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := resolveAlias(n.Content[i]), n.Content[i+1]
		if key.Tag == "!!merge" || (key.Kind == yaml.ScalarNode && key.Value == "<<" && key.Style == 0) {
			merged := resolveAlias(val)
			if merged.Kind == yaml.SequenceNode {
				for _, m := range merged.Content {
					ix.walk(m, path)
				}
				continue
			}
			ix.walk(merged, path)
			continue
		}
		p := config.Join(path, key.Value)
		ix.record(key, resolveAlias(val), p)
		ix.walk(val, p)
	}
}

func (ix *nodeIndex) record(key, val *yaml.Node, path string) {
	ix.keys[path] = append(ix.keys[path], key)
	if _, ok := ix.values[path]; !ok {
		ix.values[path] = val
	}
}

// key returns the n-th key node spelled path (0 is the first), or nil.
func (ix *nodeIndex) key(path string, n int) *yaml.Node {
	if ks := ix.keys[path]; n < len(ks) {
		return ks[n]
	}
	return nil
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// source is a policy file's text, kept to map positions inside a CEL
// expression back to the file.
type source struct {
	runes []rune
	// lineStarts[i] is the rune offset where line i+1 starts.
	lineStarts []int
}

func newSource(data []byte) *source {
	s := &source{runes: []rune(string(data)), lineStarts: []int{0}}
	for i, r := range s.runes {
		if r == '\n' {
			s.lineStarts = append(s.lineStarts, i+1)
		}
	}
	return s
}

// offset converts a 1-based line and column to a rune offset.
func (s *source) offset(p position) (int, bool) {
	if p.line < 1 || p.line > len(s.lineStarts) || p.column < 1 {
		return 0, false
	}
	off := s.lineStarts[p.line-1] + p.column - 1
	return off, off <= len(s.runes)
}

// position converts a rune offset to a 1-based line and column.
func (s *source) position(off int) position {
	line := 1
	for line < len(s.lineStarts) && s.lineStarts[line] <= off {
		line++
	}
	return position{line: line, column: off - s.lineStarts[line-1] + 1}
}

// exprPosition maps a CEL location (1-based line, 0-based column, both in
// characters of the expression) inside the scalar n to a position in the
// file. YAML quoting, escapes and folding mean the expression is not a
// verbatim copy of the file, so the expression's characters are aligned
// with the file's; where that fails the scalar's own position is returned.
func (s *source) exprPosition(n *yaml.Node, celLine, celColumn int) position {
	target, ok := runeOffset(n.Value, celLine, celColumn)
	if !ok {
		return nodePos(n)
	}
	offs, ok := s.align(n)
	if !ok || len(offs) == 0 {
		return nodePos(n)
	}
	if target >= len(offs) {
		return s.position(offs[len(offs)-1] + 1)
	}
	return s.position(offs[target])
}

// runeOffset converts a CEL location into a rune offset in expr.
func runeOffset(expr string, line, column int) (int, bool) {
	if line < 1 || column < 0 {
		return 0, false
	}
	off, cur := 0, 1
	for _, r := range expr {
		if cur == line {
			break
		}
		off++
		if r == '\n' {
			cur++
		}
	}
	if cur != line {
		return 0, false
	}
	return off + column, true
}

// align returns, for each character of n's value, its rune offset in the
// file. Whitespace in the value takes the offset of the file's next
// character, which is where an error at it is best shown.
func (s *source) align(n *yaml.Node) ([]int, bool) {
	start, ok := s.offset(nodePos(n))
	if !ok {
		return nil, false
	}
	skip := func(r rune) bool { return unicode.IsSpace(r) }
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		// The node starts at the indicator; the content on the next line.
		if n.Line >= len(s.lineStarts) {
			return nil, false
		}
		start = s.lineStarts[n.Line]
	case yaml.DoubleQuotedStyle:
		skip = func(r rune) bool { return unicode.IsSpace(r) || r == '"' || r == '\\' }
	case yaml.SingleQuotedStyle:
		skip = func(r rune) bool { return unicode.IsSpace(r) || r == '\'' }
	}
	value := []rune(n.Value)
	offs := make([]int, len(value))
	p := start
	for i, r := range value {
		if unicode.IsSpace(r) {
			offs[i] = min(p, len(s.runes))
			continue
		}
		for p < len(s.runes) && s.runes[p] != r && skip(s.runes[p]) {
			p++
		}
		if p >= len(s.runes) || s.runes[p] != r {
			return nil, false
		}
		offs[i] = p
		p++
	}
	// Whitespace maps to the next character that is not.
	for i := len(offs) - 2; i >= 0; i-- {
		if unicode.IsSpace(value[i]) {
			offs[i] = offs[i+1]
		}
	}
	return offs, true
}
