package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// versionKey is the top-level key every nhid config file starts with.
const versionKey = "version"

// Decode decodes the YAML document in data into v, a pointer to a struct
// whose fields carry `yaml:"snake_case"` tags. The document must hold a
// top-level `version:` equal to version. Unknown keys, duplicate keys and
// values of the wrong type are all reported in one error, each with its
// dotted path; on error v is left unchanged. If v's struct has no field for
// `version`, the key is still required but not stored.
func Decode(data []byte, version int, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: decode target must be a non-nil pointer to a struct, got %T", v)
	}
	root, err := parseDocument(data)
	if err != nil {
		return err
	}
	var errs Errors
	if !checkVersion(&errs, root, version) {
		return errs.Err()
	}
	w := walker{errs: &errs, topLevel: true}
	w.check(root, rv.Elem().Type(), "")
	if err := errs.Err(); err != nil {
		return err
	}
	// Everything was checked above; decoding into a fresh value first keeps
	// v untouched should yaml still refuse something the walk allowed.
	tmp := reflect.New(rv.Elem().Type())
	tmp.Elem().Set(rv.Elem())
	if err := root.Decode(tmp.Interface()); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	rv.Elem().Set(tmp.Elem())
	return nil
}

// Load reads the config file at path and decodes it as Decode does.
func Load(path string, version int, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config %s: %w", path, err)
	}
	if err := Decode(data, version, v); err != nil {
		return fmt.Errorf("config %s:\n%w", path, err)
	}
	return nil
}

// Duration parses a Go duration ("90s", "1h30m") found at path. An empty
// string is zero (the caller's default applies); a malformed or negative
// value records a problem and returns zero.
func Duration(errs *Errors, path, s string) time.Duration {
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		errs.Addf(path, "%q is not a duration (use a number with a unit: 90s, 10m, 1h)", s)
		return 0
	}
	if d < 0 {
		errs.Addf(path, "must not be negative, got %s", s)
		return 0
	}
	return d
}

// parseDocument reads exactly one YAML document and returns its root node
// (the mapping under the document node).
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &yaml.Node{}, nil
		}
		return nil, fmt.Errorf("parse config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("parse config: %w", err)
		}
		return nil, fmt.Errorf("parse config: line %d: only one YAML document is allowed", extra.Line)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0], nil
	}
	return &doc, nil
}

// checkVersion reports whether the document declares the wanted version.
func checkVersion(errs *Errors, root *yaml.Node, want int) bool {
	supported := fmt.Sprintf("supported versions: %d", want)
	if root.Kind != yaml.MappingNode {
		if root.Kind == 0 || isNull(root) {
			errs.Addf(versionKey, "missing; the file must start with \"version: %d\" (%s)", want, supported)
		} else {
			errs.addAt(root.Line, root.Column, "", "the config must be a mapping of keys to values")
		}
		return false
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != versionKey {
			continue
		}
		val := resolve(root.Content[i+1])
		got, err := strconv.Atoi(val.Value)
		if val.Kind != yaml.ScalarNode || err != nil {
			errs.addAt(val.Line, val.Column, versionKey, "%q is not a version number (%s)", val.Value, supported)
			return false
		}
		if got != want {
			errs.addAt(val.Line, val.Column, versionKey, "%d is not supported (%s)", got, supported)
			return false
		}
		return true
	}
	errs.Addf(versionKey, "missing; the file must start with \"version: %d\" (%s)", want, supported)
	return false
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

var (
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// customDecoded reports whether values of t decode themselves, in which case
// the walk only asks them whether the node suits them.
func customDecoded(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(yamlUnmarshaler) || p.Implements(textUnmarshaler)
}

// kindName describes what a scalar of kind k must look like.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	default:
		return strings.ToLower(t.Kind().String())
	}
}
