package k8s

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nhid/nhid/attestors/k8s"
	"github.com/nhid/nhid/attestors/psat"
	"github.com/nhid/nhid/internal/kubetest"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// rulesByUser resolves the ClusterRoleBindings to the rules each service
// account user holds.
func rulesByUser(t *testing.T, m manifests) map[string][]rbacv1.PolicyRule {
	t.Helper()
	out := map[string][]rbacv1.PolicyRule{}
	for _, b := range all[*rbacv1.ClusterRoleBinding](m) {
		if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.APIGroup != rbacv1.GroupName {
			t.Fatalf("binding %s refers to %s %s", b.Name, b.RoleRef.APIGroup, b.RoleRef.Kind)
		}
		role := get[*rbacv1.ClusterRole](t, m, b.RoleRef.Name)
		for _, s := range b.Subjects {
			if s.Kind != rbacv1.ServiceAccountKind {
				t.Fatalf("binding %s has a %s subject", b.Name, s.Kind)
			}
			user := "system:serviceaccount:" + s.Namespace + ":" + s.Name
			out[user] = append(out[user], role.Rules...)
		}
	}
	return out
}

// A cluster enforcing exactly the manifests' RBAC runs both Kubernetes
// attestors, as deployed: every call they make is allowed, and every
// permission granted is one they use.
func TestRBAC_GrantsExactlyWhatTheAttestorsCall(t *testing.T) {
	d := loadDeployment(t)
	rules := rulesByUser(t, d.base)
	kube := kubetest.NewCluster(t)
	kube.EnforceRBAC(rules)
	node := kube.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}})
	agentPod := kube.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.agent.Namespace, Name: d.agent.Name + "-7xk2q"},
		Spec:       corev1.PodSpec{NodeName: node.Name, ServiceAccountName: d.agent.Spec.Template.Spec.ServiceAccountName},
	})

	attestNode(t, d, kube, agentPod)
	attestWorkload(t, d, kube, agentPod)

	for _, r := range kube.Requests() {
		if !r.Allowed {
			t.Errorf("denied: %s %s %s/%s %s/%s", r.User, r.Verb, r.APIGroup, r.Resource, r.Subresource, r.Name)
		}
	}
	for user, rs := range rules {
		for _, rule := range rs {
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, verb := range rule.Verbs {
						if !used(kube.Requests(), user, verb, g, res) {
							t.Errorf("%s is granted %s on %s in group %q, which no attestor calls", user, verb, res, g)
						}
					}
				}
			}
		}
	}
}

func used(reqs []kubetest.Request, user, verb, group, resource string) bool {
	return slices.ContainsFunc(reqs, func(r kubetest.Request) bool {
		res := r.Resource
		if r.Subresource != "" {
			res += "/" + r.Subresource
		}
		return r.Allowed && r.User == user && r.Verb == verb && r.APIGroup == group && res == resource
	})
}

// attestNode runs k8s_psat as deployed: the server with its service
// account's token, the agent with the token its DaemonSet projects.
func attestNode(t *testing.T, d *deployment, kube *kubetest.Cluster, agentPod *corev1.Pod) {
	t.Helper()
	dir := t.TempDir()
	serverToken := filepath.Join(dir, "server-token")
	kube.WriteToken(t, serverToken, kubetest.TokenRequest{
		Namespace: d.server.Namespace, ServiceAccount: d.server.Spec.Template.Spec.ServiceAccountName,
	})
	clusterName := d.agentCfg.Agent.K8sPSAT.Cluster
	cluster := d.serverCfg.Server.K8sPSAT.Clusters[clusterName]
	v, err := psat.NewVerifier(psat.VerifierConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString(d.serverCfg.Server.TrustDomain),
		Clusters: map[string]psat.ClusterConfig{clusterName: {
			APIServerURL: kube.URL(), CAFile: kube.CAFile(), TokenFile: serverToken,
			ServiceAccountAllowList: cluster.ServiceAccountAllowList, Audience: cluster.Audience,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	projected := volume(t, &d.agent.Spec.Template.Spec, "agent-token").Projected.Sources[0].ServiceAccountToken
	agentToken := filepath.Join(dir, "agent-token")
	kube.WriteToken(t, agentToken, kubetest.TokenRequest{
		Namespace: agentPod.Namespace, ServiceAccount: agentPod.Spec.ServiceAccountName, Pod: agentPod,
		Audiences: []string{projected.Audience}, TTL: time.Duration(*projected.ExpirationSeconds) * time.Second,
	})
	ev, err := psat.NewEvidence(psat.EvidenceConfig{Cluster: clusterName, TokenPath: agentToken})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := attestortest.Drive(ctx, v, ev); err != nil {
		t.Fatalf("node attestation as deployed: %v", err)
	}
}

// attestWorkload runs the k8s workload attestor as deployed, against the
// node's kubelet, for a process of the whoami pod.
func attestWorkload(t *testing.T, d *deployment, kube *kubetest.Cluster, agentPod *corev1.Pod) {
	t.Helper()
	kubelet := kube.StartKubelet(t, agentPod.Spec.NodeName, kubetest.KubeletOptions{})
	const containerID = "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f"
	wl := kube.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.workload.Namespace, Name: "whoami-5c8d7"},
		Spec:       corev1.PodSpec{NodeName: agentPod.Spec.NodeName, ServiceAccountName: d.workload.Spec.Template.Spec.ServiceAccountName},
		Status:     corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "whoami", ContainerID: "containerd://" + containerID}}},
	})
	procRoot := t.TempDir()
	procDir := filepath.Join(procRoot, "4242")
	cgroup := fmt.Sprintf("0::/kubepods.slice/kubepods-pod%s.slice/cri-containerd-%s.scope\n", wl.UID, containerID)
	if err := os.MkdirAll(procDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(procDir, "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	saToken := filepath.Join(t.TempDir(), "token")
	kube.WriteToken(t, saToken, kubetest.TokenRequest{Namespace: agentPod.Namespace, ServiceAccount: agentPod.Spec.ServiceAccountName, Pod: agentPod})
	a, err := k8s.New(k8s.Config{
		KubeletURL: kubelet.URL(), KubeletCAFile: kubelet.CAFile(), KubeletServerName: agentPod.Spec.NodeName,
		NodeName: agentPod.Spec.NodeName, TokenFile: saToken, ProcRoot: procRoot,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sels, err := a.Attest(ctx, 4242)
	if err != nil {
		t.Fatalf("workload attestation as deployed: %v", err)
	}
	want := selector.Must("k8s:sa:" + d.workload.Spec.Template.Spec.ServiceAccountName)
	if !selector.NewSet(sels...).Contains(want) {
		t.Errorf("selectors %v lack %s", selector.NewSet(sels...).Strings(), want)
	}
}
