package grantreq

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// RFC 9396 section 2 members whose shape is fixed; any other member is
// type-specific and passes as it is.
var (
	detailStringArrays = []string{"locations", "actions", "datatypes", "privileges"}
	detailStrings      = []string{"identifier"}
)

// Bounds on authorization_details besides its size, the same as policy
// applies (pkg/policy), so a request policy would refuse to look at is
// refused here, with the field named, instead of denied.
const (
	// maxDetails is the most objects the array may hold.
	maxDetails = 64
	// maxDetailValues bounds the values (of any kind, at any depth) in the
	// objects.
	maxDetailValues = 4096
	// maxDetailsDepth bounds nesting: an object of the array is at depth
	// 1, its members' values at 2.
	maxDetailsDepth = 16
	// maxDetailString bounds each string value.
	maxDetailString = 4096
)

// parseDetails decodes RFC 9396 authorization_details: "" means none;
// otherwise a JSON array (at most maxBytes) of objects, each with a
// non-empty string "type" and, when present, "locations", "actions",
// "datatypes" and "privileges" as arrays of strings and "identifier" as a
// string. Duplicate member names are refused: two parsers could disagree
// on which one counts. Numbers stay json.Number, exactly as sent.
func parseDetails(s string, maxBytes int) ([]any, error) {
	if s == "" {
		return nil, nil
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("authorization_details: "+format, args...)
	}
	switch {
	case len(s) > maxBytes:
		return nil, fail("is %d bytes, at most %d allowed", len(s), maxBytes)
	case !utf8.ValidString(s):
		return nil, fail("is not valid UTF-8")
	}
	if err := checkJSONShape(s); err != nil {
		return nil, fail("%v", err)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fail("is not JSON: %v", err)
	}
	arr, ok := doc.([]any)
	if !ok {
		return nil, fail("must be a JSON array of objects (RFC 9396), got %s", jsonKind(doc))
	}
	if len(arr) == 0 {
		return nil, fail("is an empty array; leave the field empty instead")
	}
	for i, el := range arr {
		if err := checkDetail(el); err != nil {
			return nil, fmt.Errorf("authorization_details[%d]%v", i, err)
		}
	}
	return arr, nil
}

// checkDetail checks one authorization_details element; the error starts
// with the member path (".type: ...") or ": ..." for the element itself.
func checkDetail(el any) error {
	obj, ok := el.(map[string]any)
	if !ok {
		return fmt.Errorf(": must be an object, got %s", jsonKind(el))
	}
	if t, ok := obj["type"].(string); !ok || t == "" {
		return errors.New(`.type: required, a non-empty string`)
	}
	for _, name := range detailStringArrays {
		v, present := obj[name]
		if !present {
			continue
		}
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf(".%s: must be an array of strings, got %s", name, jsonKind(v))
		}
		for j, item := range list {
			if _, ok := item.(string); !ok {
				return fmt.Errorf(".%s[%d]: must be a string, got %s", name, j, jsonKind(item))
			}
		}
	}
	for _, name := range detailStrings {
		if v, present := obj[name]; present {
			if _, ok := v.(string); !ok {
				return fmt.Errorf(".%s: must be a string, got %s", name, jsonKind(v))
			}
		}
	}
	return nil
}

// checkJSONShape walks the document's tokens: exactly one value, nested
// at most maxDetailsDepth deep, with no object repeating a member name.
func checkJSONShape(s string) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	w := &shapeWalker{}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if !w.done {
				return errors.New("is not JSON: unexpected end")
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("is not JSON: %v", err)
		}
		if w.done {
			return errors.New("holds more than one JSON value")
		}
		if err := w.step(tok); err != nil {
			return err
		}
	}
}

// shapeFrame is one open object or array.
type shapeFrame struct {
	object  bool
	wantKey bool // object only: the next token is a member name or '}'
	names   map[string]bool
}

// shapeWalker follows the nesting of a token stream.
type shapeWalker struct {
	stack    []*shapeFrame
	done     bool // the top-level value is complete
	elements int  // values directly in the top-level array
	values   int  // values below the top level
}

func (w *shapeWalker) step(tok json.Token) error {
	if n := len(w.stack); n > 0 && w.stack[n-1].wantKey {
		top := w.stack[n-1]
		if name, ok := tok.(string); ok {
			if top.names[name] {
				return fmt.Errorf("repeats the member %q in one object", name)
			}
			top.names[name], top.wantKey = true, false
			return nil
		}
		// Only '}' can follow here; the decoder has checked the syntax.
		w.pop()
		return nil
	}
	if tok != json.Delim(']') && tok != json.Delim('}') {
		if err := w.countValue(tok); err != nil {
			return err
		}
	}
	switch tok {
	case json.Delim('{'), json.Delim('['):
		obj := tok == json.Delim('{')
		w.stack = append(w.stack, &shapeFrame{object: obj, wantKey: obj, names: map[string]bool{}})
	case json.Delim(']'), json.Delim('}'):
		w.pop()
	default:
		w.valueDone()
	}
	return nil
}

// countValue applies the bounds to a value starting with tok at the
// current depth.
func (w *shapeWalker) countValue(tok json.Token) error {
	depth := len(w.stack)
	switch {
	case depth > maxDetailsDepth:
		return fmt.Errorf("nests deeper than %d levels", maxDetailsDepth)
	case depth == 1:
		if w.elements++; w.elements > maxDetails {
			return fmt.Errorf("holds more than %d objects", maxDetails)
		}
	}
	if depth >= 1 {
		if w.values++; w.values > maxDetailValues {
			return fmt.Errorf("holds more than %d values", maxDetailValues)
		}
	}
	if str, ok := tok.(string); ok && len(str) > maxDetailString {
		return fmt.Errorf("holds a string of %d bytes; at most %d are allowed", len(str), maxDetailString)
	}
	return nil
}

// pop closes the innermost object or array, which completes a value.
func (w *shapeWalker) pop() {
	w.stack = w.stack[:len(w.stack)-1]
	w.valueDone()
}

// valueDone records that a value ended: an enclosing object expects a
// member name next; at the top level the document is complete.
func (w *shapeWalker) valueDone() {
	if n := len(w.stack); n == 0 {
		w.done = true
	} else if w.stack[n-1].object {
		w.stack[n-1].wantKey = true
	}
}

// jsonKind names the JSON type of a decoded value for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
