package k8s

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nhid/nhid/internal/kubetest"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/selector"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	waitTimeout = 10 * time.Second
	nodeName    = "node-1"
)

// fixture is a cluster with one node, its kubelet, an agent pod whose
// service-account token the attestor presents, and a fake procfs.
type fixture struct {
	cluster   *kubetest.Cluster
	kubelet   *kubetest.Kubelet
	clock     *clock.Fake
	procRoot  string
	tokenFile string
	nextPID   int32
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	c := kubetest.NewCluster(t)
	c.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}})
	agentPod := c.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "nhid", Name: "nhid-agent-abcde"},
		Spec:       corev1.PodSpec{NodeName: nodeName, ServiceAccountName: "nhid-agent"},
	})
	f := &fixture{
		cluster:   c,
		kubelet:   c.StartKubelet(t, nodeName, kubetest.KubeletOptions{}),
		clock:     clock.NewFake(time.Unix(1_800_000_000, 0)),
		procRoot:  t.TempDir(),
		tokenFile: filepath.Join(t.TempDir(), "token"),
		nextPID:   100,
	}
	c.WriteToken(t, f.tokenFile, kubetest.TokenRequest{Namespace: "nhid", ServiceAccount: "nhid-agent", Pod: agentPod})
	return f
}

// config is the attestor's config for the fixture's kubelet.
func (f *fixture) config() Config {
	return Config{
		Log:           slog.New(slog.DiscardHandler),
		Clock:         f.clock,
		KubeletURL:    f.kubelet.URL(),
		KubeletCAFile: f.kubelet.CAFile(),
		TokenFile:     f.tokenFile,
		RetryInterval: time.Millisecond,
		ProcRoot:      f.procRoot,
	}
}

func (f *fixture) newAttestor(t testing.TB, mutate func(*Config)) *Attestor {
	t.Helper()
	cfg := f.config()
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func newContainerID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// process adds a process to the fake procfs in the cgroup containerd's CRI
// plugin gives a pod container under systemd, and returns its pid.
func (f *fixture) process(t testing.TB, podUID, containerID string) int32 {
	t.Helper()
	cgroup := fmt.Sprintf("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod%s.slice/cri-containerd-%s.scope\n",
		podUID, containerID)
	return f.procFiles(t, cgroup)
}

// hostProcess adds a process in no container.
func (f *fixture) hostProcess(t testing.TB) int32 {
	t.Helper()
	return f.procFiles(t, "0::/system.slice/sshd.service\n")
}

func (f *fixture) procFiles(t testing.TB, cgroup string) int32 {
	t.Helper()
	f.nextPID++
	dir := filepath.Join(f.procRoot, strconv.Itoa(int(f.nextPID)))
	mountinfo := "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n"
	for name, content := range map[string]string{"cgroup": cgroup, "mountinfo": mountinfo} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return f.nextPID
}

// workloadPod schedules a running pod with one container of the given ID
// to the fixture's node.
func (f *fixture) workloadPod(name, containerID string) *corev1.Pod {
	return f.cluster.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: name,
			Labels: map[string]string{"app": "checkout", "tier": "backend"},
		},
		Spec: corev1.PodSpec{
			NodeName: nodeName, ServiceAccountName: "checkout",
			Containers: []corev1.Container{{Name: "server", Image: "registry.example.com/shop/checkout:1.4"}},
		},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name:        "server",
			ContainerID: "containerd://" + containerID,
			Image:       "registry.example.com/shop/checkout:1.4",
			ImageID:     "registry.example.com/shop/checkout@sha256:" + digestHex,
			Ready:       true,
		}}},
	})
}

const digestHex = "4bf5a2e1c87d6d0d1d1b5c4c3a5e2f3b8e0a7c6d9f1e2d3c4b5a697887665540"

func attest(t testing.TB, a *Attestor, pid int32) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sels, err := a.Attest(ctx, pid)
	return selector.NewSet(sels...).Strings(), err
}
