package k8s

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/internal/kubetest"
	rbacv1 "k8s.io/api/rbac/v1"
)

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAttest_KubeletConnectionIsAuthenticatedBothWays(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(t *testing.T, f *fixture, c *Config)
		wantErr string // "" for success
	}{
		{"pinned CA and node name", func(t *testing.T, f *fixture, c *Config) { c.KubeletServerName = nodeName }, ""},
		{"certificate of another name", func(t *testing.T, f *fixture, c *Config) { c.KubeletServerName = "node-2" }, "certificate"},
		{"another CA pinned", func(t *testing.T, f *fixture, c *Config) {
			c.KubeletCAFile = f.cluster.StartKubelet(t, nodeName, kubetest.KubeletOptions{}).CAFile()
		}, "certificate"},
		{"verification explicitly skipped", func(t *testing.T, f *fixture, c *Config) {
			c.KubeletCAFile, c.InsecureSkipKubeletVerify = "", true
		}, ""},
		{"token of another cluster", func(t *testing.T, f *fixture, c *Config) {
			c.TokenFile = filepath.Join(t.TempDir(), "token")
			kubetest.NewCluster(t).WriteToken(t, c.TokenFile, kubetest.TokenRequest{Namespace: "nhid", ServiceAccount: "nhid-agent"})
		}, "refused the agent's credentials"},
		{"no token file", func(t *testing.T, f *fixture, c *Config) { c.TokenFile = "/nonexistent/token" }, "read token file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			id := newContainerID(t)
			pid := f.process(t, string(f.workloadPod("checkout", id).UID), id)
			a := f.newAttestor(t, func(c *Config) { tt.mutate(t, f, c) })
			got, err := attest(t, a, pid)
			if tt.wantErr == "" {
				if err != nil || !contains(got, "k8s:pod-name:checkout") {
					t.Fatalf("Attest = %v, %v; want the pod's selectors", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

// The kubelet authorizes /pods as get on nodes/pods, or failing that
// nodes/proxy; the narrower nodes/pods is all the agent needs.
func TestAttest_KubeletAuthorization(t *testing.T) {
	const agent = "system:serviceaccount:nhid:nhid-agent"
	rule := func(sub string) []rbacv1.PolicyRule {
		return []rbacv1.PolicyRule{{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"nodes/" + sub}}}
	}
	tests := []struct {
		name  string
		rules []rbacv1.PolicyRule
		ok    bool
		calls []string
	}{
		{"nodes/pods", rule("pods"), true, []string{"nodes/pods allowed"}},
		{"nodes/proxy (older kubelets)", rule("proxy"), true, []string{"nodes/pods denied", "nodes/proxy allowed"}},
		{"neither", rule("stats"), false, []string{"nodes/pods denied", "nodes/proxy denied"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.cluster.EnforceRBAC(map[string][]rbacv1.PolicyRule{agent: tt.rules})
			id := newContainerID(t)
			pid := f.process(t, string(f.workloadPod("checkout", id).UID), id)
			_, err := attest(t, f.newAttestor(t, nil), pid)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want success %v", err, tt.ok)
			}
			var calls []string
			for _, r := range f.cluster.Requests() {
				verdict := "denied"
				if r.Allowed {
					verdict = "allowed"
				}
				if r.User != agent || r.Verb != "get" || r.Name != nodeName {
					t.Errorf("unexpected call %+v", r)
				}
				calls = append(calls, r.Resource+"/"+r.Subresource+" "+verdict)
			}
			if diff := cmp.Diff(tt.calls, calls); diff != "" {
				t.Errorf("authorization checks (-want +got):\n%s", diff)
			}
		})
	}
}
