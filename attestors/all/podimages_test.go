package all

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/attestors/k8s"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
	"github.com/nhid/nhid/internal/kubetest"
	"github.com/nhid/nhid/pkg/attestor"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A pod on a node without the container attestor: the sigstore attestor
// verifies the image the kubelet reports for the pod's container.
func TestWorkloadAttestors_SigstoreVerifiesPodImagesFromTheKubelet(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	key := sigstoretest.NewKey(t)
	signed := sigstoretest.PushRandom(t, reg.Host+"/shop/api:1")
	sigstoretest.Sign(t, signed, key)

	kube := kubetest.NewCluster(t)
	kubelet := kube.StartKubelet(t, "node-1", kubetest.KubeletOptions{})
	const containerID = "5d2f8a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f"
	pod := kube.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api-1"},
		Spec:       corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "api"},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: "api", ContainerID: "containerd://" + containerID, Image: reg.Host + "/shop/api:1", ImageID: signed.String(),
		}}},
	})
	procRoot, pid := t.TempDir(), int32(4_000_001) // above any real pid_max: only the fake procfs has it
	dir := filepath.Join(procRoot, fmt.Sprint(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cgroup := fmt.Sprintf("0::/kubepods.slice/kubepods-pod%s.slice/cri-containerd-%s.scope\n", pod.UID, containerID)
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(t.TempDir(), "token")
	kube.WriteToken(t, token, kubetest.TokenRequest{Namespace: "nhid", ServiceAccount: "nhid-agent"})

	as, err := WorkloadAttestors(WorkloadConfig{
		Log:      slog.New(slog.DiscardHandler),
		K8s:      &k8s.Config{KubeletURL: kubelet.URL(), KubeletCAFile: kubelet.CAFile(), TokenFile: token, ProcRoot: procRoot},
		Sigstore: &sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "release", PEM: key.PEM}}},
	})
	if err != nil {
		t.Fatalf("WorkloadAttestors: %v", err)
	}
	t.Cleanup(func() { _ = k8sAttestor(as).Close() })
	if diff := cmp.Diff([]string{"unix", "k8s", "sigstore"}, types(as)); diff != "" {
		t.Fatalf("types (-want +got):\n%s", diff)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	got, err := Combine(slog.New(slog.DiscardHandler), as...).Attest(ctx, pid)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	for _, want := range []string{"k8s:pod-name:api-1", "sigstore:signed_by:release", "sigstore:verified:true"} {
		if !strings.Contains(strings.Join(got.Strings(), " "), want) {
			t.Errorf("selectors %v lack %s", got.Strings(), want)
		}
	}
}

// resolver answers ImageRef from a script; the chain's logic is under test.
type resolver struct {
	ref string
	ok  bool
	err error
}

func (r resolver) ImageRef(context.Context, int32) (string, bool, error) { return r.ref, r.ok, r.err }

func TestImageChain_FirstThatKnowsAnswers(t *testing.T) {
	down := errors.New("containerd unreachable")
	tests := []struct {
		name    string
		chain   imageChain
		want    string
		wantOK  bool
		wantErr error
	}{
		{"first knows", imageChain{resolver{ref: "a@sha256:1", ok: true}, resolver{ref: "b@sha256:2", ok: true}}, "a@sha256:1", true, nil},
		{"second knows", imageChain{resolver{}, resolver{ref: "b@sha256:2", ok: true}}, "b@sha256:2", true, nil},
		{"a failure does not hide an answer", imageChain{resolver{err: down}, resolver{ref: "b@sha256:2", ok: true}}, "b@sha256:2", true, nil},
		{"none knows", imageChain{resolver{}, resolver{}}, "", false, nil},
		{"none knows and one failed", imageChain{resolver{err: down}, resolver{}}, "", false, down},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref, ok, err := tt.chain.ImageRef(context.Background(), 1)
			if ref != tt.want || ok != tt.wantOK || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("ImageRef = %q, %v, %v; want %q, %v, %v", ref, ok, err, tt.want, tt.wantOK, tt.wantErr)
			}
		})
	}
}

// The k8s attestor is an image resolver for the sigstore attestor.
var _ sigstore.ImageResolver = (*k8s.Attestor)(nil)

var _ attestor.Workload = (*k8s.Attestor)(nil)
