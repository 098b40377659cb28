// Package manifest decodes the example Kubernetes manifests strictly into
// k8s.io/api types, for the tests that keep the examples honest.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// NewDecoder returns a YAML decoder for the types the adders register that
// rejects unknown fields.
func NewDecoder(adders ...func(*runtime.Scheme) error) runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range adders {
		if err := add(scheme); err != nil {
			panic(err) // the adders are the k8s.io/api packages' own
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}

// DecodeFile decodes every non-empty YAML document in path.
func DecodeFile(dec runtime.Decoder, path string) ([]runtime.Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := kyaml.NewYAMLReader(bufio.NewReader(f))
	var out []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if isEmpty(doc) {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		out = append(out, obj)
	}
}

// isEmpty reports whether a YAML document holds only comments.
func isEmpty(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if l := bytes.TrimSpace(line); len(l) > 0 && l[0] != '#' && string(l) != "---" {
			return false
		}
	}
	return true
}

// Named is a Kubernetes object with a name.
type Named interface {
	runtime.Object
	GetName() string
}

// Get returns the one object of type T named name among objects.
func Get[T Named](objects []runtime.Object, name string) (T, error) {
	var found []T
	for _, o := range objects {
		if x, ok := o.(T); ok && x.GetName() == name {
			found = append(found, x)
		}
	}
	if len(found) != 1 {
		var zero T
		return zero, fmt.Errorf("want exactly one %T named %q, found %d", zero, name, len(found))
	}
	return found[0], nil
}

// All returns every object of type T among objects.
func All[T runtime.Object](objects []runtime.Object) []T {
	var out []T
	for _, o := range objects {
		if x, ok := o.(T); ok {
			out = append(out, x)
		}
	}
	return out
}
