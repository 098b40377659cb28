// Package ha holds the manifests of nhid's highly available deployment
// (a 3-member etcd StatefulSet, 3 nhid-server replicas) and the tests that
// keep them honest: strict decoding into the Kubernetes types, the server
// config accepted by nhid-server itself, and the pieces wired together.
package ha

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/examples/k8s/internal/manifest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// serverBin is nhid-server, built by TestMain.
var serverBin string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "nhid-k8s-ha-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/nhid/nhid/cmd/nhid-server")
	if out, err := build.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic("building nhid-server: " + err.Error())
	}
	serverBin = filepath.Join(dir, "nhid-server")
	return m.Run()
}

// kustomization is the part of kustomization.yaml this overlay uses,
// decoded strictly.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Patches    []struct {
		Path string `json:"path"`
	} `json:"patches"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

var decoder = manifest.NewDecoder(corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme)

// overlay is this directory's kustomization and its own objects.
type overlay struct {
	k       kustomization
	objects []runtime.Object
}

func load(t *testing.T) overlay {
	t.Helper()
	var o overlay
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &o.k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	for _, r := range o.k.Resources {
		if r != "../" {
			o.objects = append(o.objects, decodeFile(t, r)...)
		}
	}
	for _, p := range o.k.Patches {
		if p.Path != "delete-bolt-server.yaml" {
			o.objects = append(o.objects, decodeFile(t, p.Path)...)
		}
	}
	return o
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
func get[T manifest.Named](t *testing.T, o overlay, name string) T {
	t.Helper()
	x, err := manifest.Get[T](o.objects, name)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestOverlay_EveryFileIsUsedAndDecodesStrictly(t *testing.T) {
	o := load(t)
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	used := slices.Clone(o.k.Resources)
	for _, p := range o.k.Patches {
		used = append(used, p.Path)
	}
	for _, f := range files {
		if f != "kustomization.yaml" && !slices.Contains(used, f) {
			t.Errorf("%s is neither a resource nor a patch of the overlay", f)
		}
	}
	if !slices.Contains(o.k.Resources, "../") {
		t.Error("the overlay does not build on the base (../)")
	}
	del, err := os.ReadFile("delete-bolt-server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(del, []byte("$patch: delete")) || !bytes.Contains(del, []byte("kind: StatefulSet")) || !bytes.Contains(del, []byte("name: nhid-server")) {
		t.Errorf("delete-bolt-server.yaml does not delete the base's StatefulSet nhid-server:\n%s", del)
	}
	base, err := os.ReadFile("../server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(base, []byte("kind: StatefulSet\nmetadata:\n  name: nhid-server")) {
		t.Error("the base has no StatefulSet nhid-server for the overlay to delete")
	}
}

func TestOverlay_ServerConfigIsAcceptedByNhidServer(t *testing.T) {
	o := load(t)
	cfg := get[*corev1.ConfigMap](t, o, "nhid-server").Data["server.yaml"]
	// The TLS files live in a Secret volume; validate needs them readable.
	dir := t.TempDir()
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("placeholder"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg = strings.ReplaceAll(cfg, etcdClientDir+"/", dir+"/")
	path := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(serverBin, "validate", "--config", path).CombinedOutput()
	if err != nil {
		t.Fatalf("nhid-server validate: %v\n%s", err, out)
	}
	if diff := cmp.Diff(path+": configuration is valid\n", string(out)); diff != "" {
		t.Errorf("validate output (-want +got):\n%s", diff)
	}
}

// etcdClientDir is where the Deployment mounts the etcd client Secret.
const etcdClientDir = "/etc/nhid-etcd"

// serverStore is the store section of the servers' config.
type serverStore struct {
	Server struct {
		Store struct {
			Kind      string   `json:"kind"`
			Endpoints []string `json:"endpoints"`
			TLS       struct {
				CAFile   string `json:"ca_file"`
				CertFile string `json:"cert_file"`
				KeyFile  string `json:"key_file"`
			} `json:"tls"`
		} `json:"store"`
	} `json:"server"`
}

func TestOverlay_ServersReachEveryEtcdMemberOverMutualTLS(t *testing.T) {
	o := load(t)
	var cfg serverStore
	if err := yaml.Unmarshal([]byte(get[*corev1.ConfigMap](t, o, "nhid-server").Data["server.yaml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	st := cfg.Server.Store
	etcd := get[*appsv1.StatefulSet](t, o, "nhid-etcd")
	svc := get[*corev1.Service](t, o, etcd.Spec.ServiceName)
	var want []string
	for i := range int(*etcd.Spec.Replicas) {
		want = append(want, fmt.Sprintf("https://%s-%d.%s.%s.svc:%d", etcd.Name, i, svc.Name, o.k.Namespace, port(t, svc, "client")))
	}
	if diff := cmp.Diff(want, st.Endpoints); diff != "" {
		t.Errorf("store endpoints are not the etcd members' client URLs (-want +got):\n%s", diff)
	}
	if svc.Spec.ClusterIP != "None" || !svc.Spec.PublishNotReadyAddresses {
		t.Error("the etcd Service must be headless and publish not-ready members, so that members find each other")
	}
	dep := get[*appsv1.Deployment](t, o, "nhid-server")
	mounts := map[string]string{}
	for _, m := range dep.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, f := range []string{st.TLS.CAFile, st.TLS.CertFile, st.TLS.KeyFile} {
		if filepath.Dir(f) != mounts["etcd-client"] {
			t.Errorf("store TLS file %s is not in the etcd-client Secret mount %s", f, mounts["etcd-client"])
		}
	}
	args := strings.Join(etcd.Spec.Template.Spec.Containers[0].Args, " ")
	for _, flag := range []string{"--client-cert-auth", "--peer-client-cert-auth", "--trusted-ca-file=", "--peer-trusted-ca-file="} {
		if !strings.Contains(args, flag) {
			t.Errorf("etcd runs without %s", flag)
		}
	}
}

func TestOverlay_EtcdAcceptsNhidsLargestTransactions(t *testing.T) {
	etcd := get[*appsv1.StatefulSet](t, load(t), "nhid-etcd")
	flags := map[string]int{}
	for _, a := range etcd.Spec.Template.Spec.Containers[0].Args {
		if k, v, ok := strings.Cut(a, "="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				flags[k] = n
			}
		}
	}
	// A batch of 1000 entries with a few selectors each: about 7000
	// operations and a few MiB (docs/ha.md).
	if flags["--max-txn-ops"] < 8192 {
		t.Errorf("--max-txn-ops=%d, want at least 8192", flags["--max-txn-ops"])
	}
	if flags["--max-request-bytes"] < 8<<20 {
		t.Errorf("--max-request-bytes=%d, want at least 8 MiB", flags["--max-request-bytes"])
	}
}

func TestOverlay_ReplicasSurviveTheLossOfOne(t *testing.T) {
	o := load(t)
	etcd := get[*appsv1.StatefulSet](t, o, "nhid-etcd")
	dep := get[*appsv1.Deployment](t, o, "nhid-server")
	if *etcd.Spec.Replicas != 3 || *dep.Spec.Replicas != 3 {
		t.Errorf("replicas: etcd %d, nhid-server %d; want 3 and 3", *etcd.Spec.Replicas, *dep.Spec.Replicas)
	}
	for _, tc := range []struct {
		pdb    string
		labels map[string]string
	}{
		{"nhid-etcd", etcd.Spec.Template.Labels},
		{"nhid-server", dep.Spec.Template.Labels},
	} {
		pdb := get[*policyv1.PodDisruptionBudget](t, o, tc.pdb)
		for k, v := range pdb.Spec.Selector.MatchLabels {
			if tc.labels[k] != v {
				t.Errorf("PodDisruptionBudget %s selects %s=%s, which its pods lack", tc.pdb, k, v)
			}
		}
	}
	for k, v := range get[*corev1.Service](t, o, "nhid-server-pods").Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("Service nhid-server-pods selects %s=%s, which the servers lack", k, v)
		}
	}
}

// port is the number of the named port of svc.
func port(t *testing.T, svc *corev1.Service, name string) int32 {
	t.Helper()
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return p.Port
		}
	}
	t.Fatalf("Service %s has no port %s", svc.Name, name)
	return 0
}
