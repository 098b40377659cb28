package all

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nhid/nhid/attestors/k8s"
	"github.com/nhid/nhid/attestors/psat"
	"github.com/nhid/nhid/internal/kubetest"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The k8s_psat halves built here work together against a cluster.
func TestNodeEvidence_K8sPSATAttestsAgainstItsVerifier(t *testing.T) {
	c := kubetest.NewCluster(t)
	node := c.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}})
	pod := c.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "nhid", Name: "nhid-agent-1"},
		Spec:       corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "nhid-agent"},
	})
	dir := t.TempDir()
	serverToken, agentToken := filepath.Join(dir, "server"), filepath.Join(dir, "agent")
	c.WriteToken(t, serverToken, kubetest.TokenRequest{Namespace: "nhid", ServiceAccount: "nhid-server"})
	c.WriteToken(t, agentToken, kubetest.TokenRequest{Namespace: "nhid", ServiceAccount: "nhid-agent", Pod: pod, Audiences: []string{psat.DefaultAudience}})

	vs, err := NodeVerifiers(NodeVerifierConfig{
		TrustDomain: testTD, Tokens: openStore(t), Log: slog.New(slog.DiscardHandler),
		K8sPSATClusters: map[string]psat.ClusterConfig{"prod": {
			APIServerURL: c.URL(), CAFile: c.CAFile(), TokenFile: serverToken,
			ServiceAccountAllowList: []string{"nhid:nhid-agent"},
		}},
	})
	if err != nil {
		t.Fatalf("NodeVerifiers: %v", err)
	}
	v := verifierFor(t, vs, psat.Type)
	t.Cleanup(v.(*psat.Verifier).Close)
	ev, err := NodeEvidence(psat.Type, NodeEvidenceConfig{K8sPSAT: psat.EvidenceConfig{Cluster: "prod", TokenPath: agentToken}})
	if err != nil {
		t.Fatalf("NodeEvidence: %v", err)
	}
	res, err := attestortest.Drive(context.Background(), v, ev)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	if want := "spiffe://example.org/nhid/agent/k8s_psat/prod/" + string(node.UID); res.AgentID.String() != want {
		t.Errorf("AgentID = %s, want %s", res.AgentID, want)
	}
}

func TestNodeEvidence_K8sPSATNeedsACluster(t *testing.T) {
	_, err := NodeEvidence(psat.Type, NodeEvidenceConfig{})
	if err == nil || !strings.Contains(err.Error(), "node attestor k8s_psat") || !strings.Contains(err.Error(), "Cluster") {
		t.Errorf("err = %v, want one naming the attestor and its Cluster field", err)
	}
}

func TestWorkloadAttestors_K8sOnlyWhenConfigured(t *testing.T) {
	c := kubetest.NewCluster(t)
	kubelet := c.StartKubelet(t, "node-1", kubetest.KubeletOptions{})
	as, err := WorkloadAttestors(WorkloadConfig{K8s: &k8s.Config{KubeletURL: kubelet.URL(), KubeletCAFile: kubelet.CAFile()}})
	if err != nil {
		t.Fatalf("WorkloadAttestors: %v", err)
	}
	if got := strings.Join(types(as), ","); got != "unix,k8s" {
		t.Fatalf("types = %s, want unix,k8s", got)
	}
	t.Cleanup(func() { _ = as[1].(*k8s.Attestor).Close() })
	_, err = WorkloadAttestors(WorkloadConfig{K8s: &k8s.Config{KubeletURL: kubelet.URL()}})
	if err == nil || !strings.Contains(err.Error(), "workload attestor k8s") {
		t.Errorf("err = %v, want one naming the k8s attestor", err)
	}
}
