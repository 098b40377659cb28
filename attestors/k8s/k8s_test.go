package k8s

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/internal/kubetest"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAttestor_Conformance(t *testing.T) {
	f := newFixture(t)
	a := f.newAttestor(t, func(c *Config) { c.ProcRoot = "/proc" })
	// The test process may itself run in a container (CI often does): then
	// the kubelet lists it, as it would in a pod.
	id, err := a.containerID(int32(os.Getpid()))
	if err != nil {
		t.Fatalf("container ID of the test process: %v", err)
	}
	if id != "" {
		f.workloadPod("test-process", id)
	}
	attestortest.RunWorkload(t, a)
}

func TestAttest_DescribesThePodContainer(t *testing.T) {
	f := newFixture(t)
	id := newContainerID(t)
	pod := f.workloadPod("checkout-7d9f", id)
	got, err := attest(t, f.newAttestor(t, nil), f.process(t, string(pod.UID), id))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	want := []string{
		"k8s:container-image:registry.example.com/shop/checkout:1.4",
		"k8s:container-image:registry.example.com/shop/checkout@sha256:" + digestHex,
		"k8s:container-name:server",
		"k8s:node-name:node-1",
		"k8s:ns:shop",
		"k8s:pod-label:app:checkout",
		"k8s:pod-label:tier:backend",
		"k8s:pod-name:checkout-7d9f",
		"k8s:pod-uid:" + string(pod.UID),
		"k8s:sa:checkout",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
}

func TestAttest_FindsInitAndEphemeralContainers(t *testing.T) {
	f := newFixture(t)
	initID, debugID := newContainerID(t), newContainerID(t)
	pod := f.cluster.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "migrate"},
		Spec: corev1.PodSpec{
			NodeName: nodeName, ServiceAccountName: "migrator",
			InitContainers: []corev1.Container{{Name: "schema", Image: "migrate:2"}},
			EphemeralContainers: []corev1.EphemeralContainer{{
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox:1.37"},
			}},
		},
		Status: corev1.PodStatus{
			InitContainerStatuses:      []corev1.ContainerStatus{{Name: "schema", ContainerID: "cri-o://" + initID, Image: "migrate:2"}},
			EphemeralContainerStatuses: []corev1.ContainerStatus{{Name: "debugger", ContainerID: "containerd://" + debugID, Image: "busybox:1.37"}},
		},
	})
	a := f.newAttestor(t, nil)
	for id, want := range map[string]string{initID: "schema", debugID: "debugger"} {
		got, err := attest(t, a, f.process(t, string(pod.UID), id))
		if err != nil {
			t.Fatalf("Attest(%s): %v", want, err)
		}
		if !contains(got, "k8s:container-name:"+want) || !contains(got, "k8s:sa:migrator") {
			t.Errorf("selectors of %s = %v, want its container name and the pod's service account", want, got)
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestAttest_ProcessInNoContainerGetsNothingWithoutAskingTheKubelet(t *testing.T) {
	f := newFixture(t)
	got, err := attest(t, f.newAttestor(t, nil), f.hostProcess(t))
	if err != nil || len(got) != 0 {
		t.Fatalf("Attest = %v, %v; want no selectors and no error", got, err)
	}
	if n := f.kubelet.Fetches(); n != 0 {
		t.Errorf("kubelet asked %d times, want 0", n)
	}
}

func TestAttest_ServesFromTheCachedPodListUntilItAges(t *testing.T) {
	f := newFixture(t)
	id := newContainerID(t)
	pid := f.process(t, string(f.workloadPod("checkout", id).UID), id)
	a := f.newAttestor(t, nil)
	for range 3 {
		if _, err := attest(t, a, pid); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.kubelet.Fetches(); n != 1 {
		t.Errorf("after 3 attestations within the TTL the kubelet was asked %d times, want 1", n)
	}
	f.clock.Add(DefaultPodListTTL)
	if _, err := attest(t, a, pid); err != nil {
		t.Fatal(err)
	}
	if n := f.kubelet.Fetches(); n != 2 {
		t.Errorf("after the TTL the kubelet was asked %d times in all, want 2", n)
	}
}

func TestAttest_ConcurrentColdCallsShareOneFetch(t *testing.T) {
	f := newFixture(t)
	id := newContainerID(t)
	pid := f.process(t, string(f.workloadPod("checkout", id).UID), id)
	a := f.newAttestor(t, nil)
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Go(func() { _, errs[i] = attest(t, a, pid) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := f.kubelet.Fetches(); n != 1 {
		t.Errorf("50 concurrent attestations asked the kubelet %d times, want 1", n)
	}
}

func TestAttest_RetriesWhileTheKubeletHasNotReportedTheContainer(t *testing.T) {
	f := newFixture(t)
	id := newContainerID(t)
	pid := f.process(t, string(f.workloadPod("checkout", id).UID), id)
	f.kubelet.HideContainerStatuses(3)
	got, err := attest(t, f.newAttestor(t, nil), pid)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if !contains(got, "k8s:pod-name:checkout") {
		t.Errorf("selectors = %v, want the pod's", got)
	}
	if n := f.kubelet.Fetches(); n != 4 {
		t.Errorf("kubelet asked %d times, want 4: three lists without the status, one with it", n)
	}
}

func TestAttest_GivesUpAfterMaxRetriesAndThenStopsRetrying(t *testing.T) {
	f := newFixture(t)
	unknown := newContainerID(t)
	pid := f.process(t, "0b6c6d1e-2f3a-4b5c-8d7e-9f0a1b2c3d4e", unknown)
	a := f.newAttestor(t, func(c *Config) { c.MaxRetries = 3 })
	_, err := attest(t, a, pid)
	if !errors.Is(err, errNotInPodList) {
		t.Fatalf("err = %v, want %v", err, errNotInPodList)
	}
	if n := f.kubelet.Fetches(); n != 4 {
		t.Errorf("kubelet asked %d times, want 4: the first list and 3 retries", n)
	}
	// Known not to be a pod's: one more look, in the cached list, no retries.
	if _, err := attest(t, a, pid); !errors.Is(err, errNotInPodList) {
		t.Fatalf("second attestation: err = %v, want %v", err, errNotInPodList)
	}
	if n := f.kubelet.Fetches(); n != 4 {
		t.Errorf("the second attestation asked the kubelet again (%d in all), want no retries", n)
	}
}

func TestAttest_CancelledWhileRetryingReturnsTheContextError(t *testing.T) {
	f := newFixture(t)
	id := newContainerID(t)
	pid := f.process(t, "0b6c6d1e-2f3a-4b5c-8d7e-9f0a1b2c3d4e", id)
	a := f.newAttestor(t, func(c *Config) { c.MaxRetries = 1 << 20 })
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for f.kubelet.Fetches() < 3 { // it is retrying
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := a.Attest(ctx, pid); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestAttest_IgnoresPodsOfAnotherNode(t *testing.T) {
	f := newFixture(t)
	id := newContainerID(t)
	pid := f.process(t, string(f.workloadPod("checkout", id).UID), id)
	a := f.newAttestor(t, func(c *Config) { c.NodeName = "node-2"; c.MaxRetries = 1 })
	if _, err := attest(t, a, pid); !errors.Is(err, errNotInPodList) {
		t.Fatalf("err = %v, want %v", err, errNotInPodList)
	}
}

func TestImageRef_IsTheCanonicalDigestReference(t *testing.T) {
	tests := []struct {
		imageID string
		want    string
		wantOK  bool
	}{
		{"registry.example.com/shop/checkout@sha256:" + digestHex, "registry.example.com/shop/checkout@sha256:" + digestHex, true},
		{"docker.io/library/nginx@sha256:" + digestHex, "index.docker.io/library/nginx@sha256:" + digestHex, true},
		{"docker-pullable://nginx@sha256:" + digestHex, "index.docker.io/library/nginx@sha256:" + digestHex, true},
		{"sha256:" + digestHex, "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.imageID, func(t *testing.T) {
			got, ok, err := imageRef(tt.imageID)
			if err != nil || got != tt.want || ok != tt.wantOK {
				t.Errorf("imageRef = %q, %v, %v; want %q, %v, nil", got, ok, err, tt.want, tt.wantOK)
			}
		})
	}
	if _, _, err := imageRef("nginx@sha256:short"); err == nil {
		t.Error("imageRef of a malformed digest succeeded, want an error")
	}
}

func TestAttestor_ImageRefOfAPodContainer(t *testing.T) {
	f := newFixture(t)
	id := newContainerID(t)
	pid := f.process(t, string(f.workloadPod("checkout", id).UID), id)
	a := f.newAttestor(t, nil)
	ref, ok, err := a.ImageRef(t.Context(), pid)
	if err != nil || !ok || ref != "registry.example.com/shop/checkout@sha256:"+digestHex {
		t.Errorf("ImageRef = %q, %v, %v; want the status's image ID", ref, ok, err)
	}
	if _, ok, err := a.ImageRef(t.Context(), f.hostProcess(t)); ok || err != nil {
		t.Errorf("ImageRef of a host process = %v, %v; want not ok and no error", ok, err)
	}
}

func TestNew_ReportsBadConfig(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"negative values", func(c *Config) { c.MaxRetries, c.PodListTTL = -1, -1 }, []string{"MaxRetries", "PodListTTL"}},
		{"relative proc root", func(c *Config) { c.ProcRoot = "proc" }, []string{"ProcRoot"}},
		{"bad read-only port", func(c *Config) { c.ReadOnlyPort = 70000 }, []string{"ReadOnlyPort"}},
		{"no CA to verify the kubelet", func(c *Config) { c.KubeletCAFile = "" }, []string{"CAFile"}},
		{"plain http without the read-only port", func(c *Config) { c.KubeletURL = "http://127.0.0.1:10255" }, []string{"https"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := f.config()
			tt.mutate(&cfg)
			_, err := New(cfg)
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestAttest_ReadOnlyPortNeedsNoCredentials(t *testing.T) {
	f := newFixture(t)
	ro := f.cluster.StartKubelet(t, nodeName, kubetest.KubeletOptions{ReadOnly: true})
	port := ro.URL()[strings.LastIndex(ro.URL(), ":")+1:]
	id := newContainerID(t)
	pid := f.process(t, string(f.workloadPod("checkout", id).UID), id)
	a := f.newAttestor(t, func(c *Config) {
		c.KubeletURL, c.KubeletCAFile, c.TokenFile = "https://127.0.0.1:10250", "", "/nonexistent"
		c.ReadOnlyPort = atoi(t, port)
	})
	if got, err := attest(t, a, pid); err != nil || !contains(got, "k8s:ns:shop") {
		t.Fatalf("Attest over the read-only port = %v, %v; want the pod's selectors", got, err)
	}
}
