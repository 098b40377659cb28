package k8s

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkAttest measures one attestation of a pod container on a node
// running 110 pods (the kubelet's default maximum) with the pod list cache
// warm (the steady state) and cold (every attestation fetches and indexes
// the list over HTTPS, on a kept-alive connection).
func BenchmarkAttest(b *testing.B) {
	f := newFixture(b)
	var pid int32
	for i := range 110 {
		id := newContainerID(b)
		pod := f.cluster.AddPod(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: fmt.Sprintf("app-%03d", i), Labels: map[string]string{"app": "shop"}},
			Spec: corev1.PodSpec{NodeName: nodeName, ServiceAccountName: "shop",
				Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/shop:1"}}},
			Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
				Name: "app", ContainerID: "containerd://" + id, Image: "registry.example.com/shop:1",
				ImageID: "registry.example.com/shop@sha256:" + digestHex,
			}}},
		})
		pid = f.process(b, string(pod.UID), id)
	}
	ctx := context.Background()
	b.Run("warm_cache", func(b *testing.B) {
		a := f.newAttestor(b, nil)
		if _, err := a.Attest(ctx, pid); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Attest(ctx, pid); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold_cache", func(b *testing.B) {
		a := f.newAttestor(b, nil)
		b.ReportAllocs()
		for b.Loop() {
			a.pods.mu.Lock()
			a.pods.cur = nil
			a.pods.mu.Unlock()
			if _, err := a.Attest(ctx, pid); err != nil {
				b.Fatal(err)
			}
		}
	})
}
