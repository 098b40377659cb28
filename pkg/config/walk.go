package config

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// walker checks a YAML node tree against the Go type it will be decoded
// into, recording every unknown key, duplicate key and mistyped value with
// its path instead of stopping at the first, as yaml's own decoder does.
type walker struct {
	errs *Errors
	// topLevel is true while checking the root mapping, where the version
	// key is allowed even without a field for it.
	topLevel bool
}

func (w *walker) addf(n *yaml.Node, path, format string, args ...any) {
	w.errs.addAt(n.Line, n.Column, path, format, args...)
}

func (w *walker) check(n *yaml.Node, t reflect.Type, path string) {
	n = resolve(n)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == 0 || isNull(n) {
		return // an empty value leaves the default in place
	}
	if customDecoded(t) {
		w.tryDecode(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		w.checkStruct(n, t, path)
	case reflect.Map:
		w.checkMap(n, t, path)
	case reflect.Slice, reflect.Array:
		w.checkList(n, t, path)
	case reflect.Interface:
		// Anything decodes into an interface.
	default:
		if n.Kind != yaml.ScalarNode {
			w.addf(n, path, "must be %s, got a %s", kindName(t), nodeKindName(n))
			return
		}
		w.tryDecode(n, t, path)
	}
}

func (w *walker) tryDecode(n *yaml.Node, t reflect.Type, path string) {
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		if n.Kind == yaml.ScalarNode {
			w.addf(n, path, "must be %s, got %q", kindName(t), n.Value)
			return
		}
		w.addf(n, path, "must be %s, got a %s", kindName(t), nodeKindName(n))
	}
}

func (w *walker) checkStruct(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		w.addf(n, path, "must be a mapping, got %s", describe(n))
		return
	}
	fields := structFields(t)
	top := w.topLevel
	w.topLevel = false
	w.eachKey(n, path, func(key, val *yaml.Node, keyPath string) {
		f, ok := fields[key.Value]
		switch {
		case ok:
			w.check(val, f, keyPath)
		case top && key.Value == versionKey:
			// Checked by checkVersion.
		default:
			w.addf(key, keyPath, "unknown key")
		}
	}, func(val *yaml.Node) { w.check(val, t, path) })
}

func (w *walker) checkMap(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		w.addf(n, path, "must be a mapping, got %s", describe(n))
		return
	}
	w.topLevel = false
	w.eachKey(n, path, func(key, val *yaml.Node, keyPath string) {
		w.check(key, t.Key(), keyPath)
		w.check(val, t.Elem(), keyPath)
	}, func(val *yaml.Node) { w.check(val, t, path) })
}

func (w *walker) checkList(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.SequenceNode {
		w.addf(n, path, "must be a list, got %s", describe(n))
		return
	}
	if t.Kind() == reflect.Array && len(n.Content) > t.Len() {
		w.addf(n, path, "must have at most %d items, got %d", t.Len(), len(n.Content))
	}
	w.topLevel = false
	for i, item := range n.Content {
		w.check(item, t.Elem(), Index(path, i))
	}
}

// eachKey visits the key/value pairs of a mapping, reporting duplicate keys
// and handing merge keys (<<) to merge with the mapping's own type.
func (w *walker) eachKey(n *yaml.Node, path string, visit func(key, val *yaml.Node, keyPath string), merge func(*yaml.Node)) {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := resolve(n.Content[i]), n.Content[i+1]
		if key.Tag == "!!merge" || (key.Kind == yaml.ScalarNode && key.Value == "<<" && key.Style == 0) {
			w.checkMerge(val, merge)
			continue
		}
		keyPath := Join(path, key.Value)
		if line, dup := seen[key.Value]; dup {
			w.addf(key, keyPath, "duplicate key (first set on line %d)", line)
			continue
		}
		seen[key.Value] = key.Line
		visit(key, val, keyPath)
	}
}

func (w *walker) checkMerge(val *yaml.Node, merge func(*yaml.Node)) {
	val = resolve(val)
	if val.Kind == yaml.SequenceNode {
		for _, item := range val.Content {
			merge(item)
		}
		return
	}
	merge(val)
}

// structFields maps the YAML names of t's fields to their types, following
// yaml's rules: the tag's name, else the lowercased field name; "-" skips a
// field; ",inline" merges an embedded struct's fields.
func structFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range structFields(ft) {
					fields[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
	}
	return fields
}

func nodeKindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "value"
	}
}

func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return fmt.Sprintf("%q", n.Value)
	}
	return "a " + nodeKindName(n)
}
