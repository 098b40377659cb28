// Package k8s holds the Kubernetes manifests of the examples and the tests
// that keep them honest: every manifest decodes strictly into k8s.io/api
// types, the ConfigMaps hold configs nhid's own binaries accept, the
// pieces are wired to each other, and the RBAC rules grant exactly what
// the attestors call.
package k8s

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/examples/k8s/internal/manifest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// binDir holds nhid-server and nhid-agent, built by TestMain.
var binDir string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "nhid-k8s-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/nhid/nhid/cmd/nhid-server", "github.com/nhid/nhid/cmd/nhid-agent")
	if out, err := build.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic("building the binaries: " + err.Error())
	}
	binDir = dir
	return m.Run()
}

// kustomization is the part of a kustomization.yaml these examples use;
// decoding is strict, so a field the test does not know fails it.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// manifests is every object of one kustomization, decoded.
type manifests struct {
	k       kustomization
	objects []runtime.Object
}

var decoder = manifest.NewDecoder(corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme)

// load reads the kustomization in dir and every resource it lists,
// requiring each document to decode strictly into its k8s.io/api type and
// every YAML file in dir to be listed.
func load(t *testing.T, dir string) manifests {
	t.Helper()
	var m manifests
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &m.k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	if m.k.APIVersion != "kustomize.config.k8s.io/v1beta1" || m.k.Kind != "Kustomization" {
		t.Errorf("%s/kustomization.yaml is %s %s", dir, m.k.APIVersion, m.k.Kind)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var unlisted []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(m.k.Resources, base) {
			unlisted = append(unlisted, base)
		}
	}
	if len(unlisted) > 0 {
		t.Errorf("%s: files not in kustomization.yaml's resources: %v", dir, unlisted)
	}
	for _, r := range m.k.Resources {
		m.objects = append(m.objects, decodeFile(t, filepath.Join(dir, r))...)
	}
	return m
}

func decodeFile(t *testing.T, path string) []runtime.Object {
	t.Helper()
	objs, err := manifest.DecodeFile(decoder, path)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// get returns the one object of type T named name.
func get[T manifest.Named](t *testing.T, m manifests, name string) T {
	t.Helper()
	x, err := manifest.Get[T](m.objects, name)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func all[T runtime.Object](m manifests) []T { return manifest.All[T](m.objects) }

func TestManifests_DecodeStrictlyIntoKubernetesTypes(t *testing.T) {
	for _, dir := range []string{".", "whoami"} {
		t.Run(dir, func(t *testing.T) {
			m := load(t, dir)
			for _, o := range m.objects {
				meta, ok := o.(interface{ GetNamespace() string })
				if !ok {
					t.Fatalf("%T has no metadata", o)
				}
				if ns := meta.GetNamespace(); ns != "" && ns != m.k.Namespace {
					t.Errorf("%T in namespace %q, the kustomization sets %q", o, ns, m.k.Namespace)
				}
			}
		})
	}
}

func TestManifests_StrictDecodingRejectsUnknownFields(t *testing.T) {
	doc := []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: {}\nbogus: 1\n")
	if _, _, err := decoder.Decode(doc, nil, nil); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("decoding a ConfigMap with an unknown field: err = %v, want it refused", err)
	}
}

// configFile writes the key of a ConfigMap to a temp file.
func configFile(t *testing.T, cm *corev1.ConfigMap, key string) string {
	t.Helper()
	data, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cm.Name, key)
	}
	path := filepath.Join(t.TempDir(), key)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigMaps_HoldConfigsTheBinariesAccept(t *testing.T) {
	m := load(t, ".")
	tests := []struct {
		bin, configMap, key string
	}{
		{"nhid-server", "nhid-server", "server.yaml"},
		{"nhid-agent", "nhid-agent", "agent.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.bin, func(t *testing.T) {
			path := configFile(t, get[*corev1.ConfigMap](t, m, tt.configMap), tt.key)
			cmd := exec.Command(filepath.Join(binDir, tt.bin), "validate", "--config", path)
			// The DaemonSet sets NODE_NAME from the downward API.
			cmd.Env = append(os.Environ(), "NODE_NAME=node-1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s validate: %v\n%s", tt.bin, err, out)
			}
			if diff := cmp.Diff(path+": configuration is valid\n", string(out)); diff != "" {
				t.Errorf("%s validate output (-want +got):\n%s", tt.bin, diff)
			}
		})
	}
}
