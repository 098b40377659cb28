package psat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/internal/kubetest"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/selector"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestVerifier_Conformance(t *testing.T) {
	f := newFixture(t)
	attestortest.NodeCase{
		Verifier:    f.v,
		NewEvidence: func(t *testing.T) attestor.NodeEvidence { return f.evidence(t, f.agentToken(t)) },
		TrustDomain: testTD,
	}.Run(t)
}

func TestVerifier_BindsTheTokenToTheAgentPodsNode(t *testing.T) {
	f := newFixture(t)
	res, err := f.attest(t, f.v, f.evidence(t, f.agentToken(t)))
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	wantID := "spiffe://example.org/nhid/agent/k8s_psat/prod/" + string(f.node.UID)
	if got := res.AgentID.String(); got != wantID {
		t.Errorf("AgentID = %s, want %s", got, wantID)
	}
	if !res.CanReattest {
		t.Error("CanReattest = false, want true: a projected token is renewed")
	}
	want := []string{
		"k8s_psat:agent_node_label:kubernetes.io/hostname:node-1",
		"k8s_psat:agent_node_label:topology.kubernetes.io/zone:zone-a",
		"k8s_psat:agent_node_name:node-1",
		"k8s_psat:agent_node_uid:" + string(f.node.UID),
		"k8s_psat:agent_ns:nhid",
		"k8s_psat:agent_pod_name:nhid-agent-x7k2p",
		"k8s_psat:agent_pod_uid:" + string(f.pod.UID),
		"k8s_psat:agent_sa:nhid-agent",
		"k8s_psat:cluster:prod",
	}
	if diff := cmp.Diff(want, selector.NewSet(res.Selectors...).Strings()); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	if !strings.Contains(f.logs.String(), "k8s_psat attested") {
		t.Errorf("no success line in the logs:\n%s", f.logs)
	}
}

func TestVerifier_AllowedNodeLabelKeysLimitLabelSelectors(t *testing.T) {
	f := newFixture(t)
	cfg := f.cfg
	cfg.AllowedNodeLabelKeys = []string{"topology.kubernetes.io/zone"}
	res, err := f.attest(t, f.newVerifier(t, cfg), f.evidence(t, f.agentToken(t)))
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	var labels []string
	for _, s := range selector.NewSet(res.Selectors...).Strings() {
		if strings.HasPrefix(s, "k8s_psat:agent_node_label:") {
			labels = append(labels, s)
		}
	}
	if diff := cmp.Diff([]string{"k8s_psat:agent_node_label:topology.kubernetes.io/zone:zone-a"}, labels); diff != "" {
		t.Errorf("label selectors (-want +got):\n%s", diff)
	}
}

func TestVerifier_RefusesTokensThatDoNotProveAnAllowedAgentPod(t *testing.T) {
	tests := []struct {
		name string
		// present prepares the cluster and returns the evidence to attest.
		present func(t *testing.T, f *fixture) *Evidence
		want    error
	}{
		{"token for another audience", func(t *testing.T, f *fixture) *Evidence {
			r := f.agentToken(t)
			r.Audiences = []string{"vault"}
			return f.evidence(t, r)
		}, errNotAuthentic},
		{"expired token", func(t *testing.T, f *fixture) *Evidence {
			r := f.agentToken(t)
			r.IssuedAt, r.TTL = time.Now().Add(-2*time.Hour), time.Hour
			return f.evidence(t, r)
		}, errNotAuthentic},
		{"token signed by another cluster", func(t *testing.T, f *fixture) *Evidence {
			other := kubetest.NewCluster(t)
			path := filepath.Join(t.TempDir(), "token")
			other.WriteToken(t, path, f.agentToken(t))
			return mustEvidence(t, clusterName, path)
		}, errNotAuthentic},
		{"agent pod replaced since the token was issued", func(t *testing.T, f *fixture) *Evidence {
			ev := f.evidence(t, f.agentToken(t))
			f.cluster.DeletePod(agentNS, f.pod.Name)
			f.addAgentPod(t, f.pod.Name, agentSA)
			return ev
		}, errNotAuthentic},
		{"API server that ignores audiences", func(t *testing.T, f *fixture) *Evidence {
			f.cluster.SetAudienceUnaware(true)
			return f.evidence(t, f.agentToken(t))
		}, errAudience},
		{"service account not in the allow list", func(t *testing.T, f *fixture) *Evidence {
			pod := f.addAgentPod(t, "intruder", "default")
			return f.evidence(t, kubetest.TokenRequest{Namespace: agentNS, ServiceAccount: "default", Pod: pod, Audiences: []string{DefaultAudience}})
		}, errNotAllowed},
		{"token bound to no pod", func(t *testing.T, f *fixture) *Evidence {
			return f.evidence(t, kubetest.TokenRequest{Namespace: agentNS, ServiceAccount: agentSA, Audiences: []string{DefaultAudience}})
		}, errNotPodBound},
		{"pod running as another service account", func(t *testing.T, f *fixture) *Evidence {
			pod := f.addAgentPod(t, "borrowed", "default")
			return f.evidence(t, kubetest.TokenRequest{Namespace: agentNS, ServiceAccount: agentSA, Pod: pod, Audiences: []string{DefaultAudience}})
		}, errPodMismatch},
		{"pod not running", func(t *testing.T, f *fixture) *Evidence {
			pod := f.cluster.AddPod(&corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: agentNS, Name: "pending"},
				Spec:       corev1.PodSpec{NodeName: nodeName, ServiceAccountName: agentSA},
				Status:     corev1.PodStatus{Phase: corev1.PodSucceeded},
			})
			return f.evidence(t, kubetest.TokenRequest{Namespace: agentNS, ServiceAccount: agentSA, Pod: pod, Audiences: []string{DefaultAudience}})
		}, errPodNotRunning},
		{"node gone", func(t *testing.T, f *fixture) *Evidence {
			ev := f.evidence(t, f.agentToken(t))
			f.cluster.DeleteNode(nodeName)
			return ev
		}, errNodeGone},
		{"node re-created under the same name", func(t *testing.T, f *fixture) *Evidence {
			ev := f.evidence(t, f.agentToken(t))
			f.cluster.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}})
			return ev
		}, errNodeMismatch},
		{"cluster the server does not know", func(t *testing.T, f *fixture) *Evidence {
			path := filepath.Join(t.TempDir(), "token")
			f.cluster.WriteToken(t, path, f.agentToken(t))
			return mustEvidence(t, "staging", path)
		}, errUnknownCluster},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ev := tt.present(t, f)
			_, err := f.attest(t, f.v, ev)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			checkLogsHoldNoToken(t, f.logs.String(), ev)
			if !strings.Contains(f.logs.String(), "k8s_psat attestation refused") {
				t.Errorf("no refusal line in the logs:\n%s", f.logs)
			}
		})
	}
}

func mustEvidence(t *testing.T, cluster, path string) *Evidence {
	t.Helper()
	ev, err := NewEvidence(EvidenceConfig{Cluster: cluster, TokenPath: path})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// checkLogsHoldNoToken requires that no part of the token's signature,
// which is what makes it a credential, reached the logs.
func checkLogsHoldNoToken(t *testing.T, logs string, ev *Evidence) {
	t.Helper()
	tok, err := os.ReadFile(ev.tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	sig := string(tok[strings.LastIndex(string(tok), ".")+1:])
	if strings.Contains(logs, sig[:16]) {
		t.Errorf("logs hold the token:\n%s", logs)
	}
}

func TestVerifier_OwnCredentialAndConnectionFailuresAreNotVerdicts(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(t *testing.T, f *fixture) ClusterConfig
		wantErr string
	}{
		{"server token rejected", func(t *testing.T, f *fixture) ClusterConfig {
			cfg := f.cfg
			cfg.TokenFile = filepath.Join(t.TempDir(), "token")
			kubetest.NewCluster(t).WriteToken(t, cfg.TokenFile, kubetest.TokenRequest{Namespace: "nhid", ServiceAccount: "nhid-server"})
			return cfg
		}, "refused this server's credentials"},
		{"server lacks RBAC", func(t *testing.T, f *fixture) ClusterConfig {
			f.cluster.EnforceRBAC(nil)
			return f.cfg
		}, "refused this server's credentials"},
		{"server token file missing", func(t *testing.T, f *fixture) ClusterConfig {
			cfg := f.cfg
			cfg.TokenFile = filepath.Join(t.TempDir(), "absent")
			return cfg
		}, "read token file"},
		{"API server certificate from another CA", func(t *testing.T, f *fixture) ClusterConfig {
			cfg := f.cfg
			cfg.CAFile = kubetest.NewCluster(t).CAFile()
			return cfg
		}, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			v := f.newVerifier(t, tt.breakIt(t, f))
			_, err := f.attest(t, v, f.evidence(t, f.agentToken(t)))
			if err == nil || errors.Is(err, attestor.ErrAttestationFailed) {
				t.Fatalf("err = %v, want an internal error that is not ErrAttestationFailed", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "cluster prod") {
				t.Errorf("err = %v, want it to name the cluster and say %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerifier_RefusesMalformedPayloads(t *testing.T) {
	f := newFixture(t)
	tok := f.cluster.Token(t, f.agentToken(t))
	payloads := map[string]string{
		"not JSON":          "cluster=prod",
		"unknown field":     `{"cluster":"prod","token":"` + tok + `","node":"x"}`,
		"trailing data":     `{"cluster":"prod","token":"` + tok + `"} {}`,
		"bad cluster name":  `{"cluster":"../prod","token":"` + tok + `"}`,
		"token not a JWT":   `{"cluster":"prod","token":"bm90IGEgand0"}`,
		"token with spaces": `{"cluster":"prod","token":"a.b c.d"}`,
		"no token":          `{"cluster":"prod"}`,
		"huge":              `{"cluster":"prod","token":"` + strings.Repeat("a", maxPayload) + `"}`,
	}
	for name, p := range payloads {
		t.Run(name, func(t *testing.T) {
			_, err := f.v.Attest(t.Context(), []byte(p), nil)
			if !errors.Is(err, errMalformed) {
				t.Fatalf("err = %v, want %v", err, errMalformed)
			}
		})
	}
}

func TestNewVerifier_ReportsBadConfig(t *testing.T) {
	f := newFixture(t)
	with := func(mut func(*ClusterConfig)) map[string]ClusterConfig {
		cfg := f.cfg
		mut(&cfg)
		return map[string]ClusterConfig{clusterName: cfg}
	}
	tests := []struct {
		name     string
		cfg      VerifierConfig
		wantErrs []string
	}{
		{"no trust domain", VerifierConfig{}, []string{"TrustDomain"}},
		{"empty allow list", VerifierConfig{TrustDomain: testTD, Clusters: with(func(c *ClusterConfig) { c.ServiceAccountAllowList = nil })},
			[]string{"cluster prod", "ServiceAccountAllowList"}},
		{"allow-list item without namespace", VerifierConfig{TrustDomain: testTD, Clusters: with(func(c *ClusterConfig) { c.ServiceAccountAllowList = []string{"nhid-agent"} })},
			[]string{"ServiceAccountAllowList[0]", "namespace:name"}},
		{"plain http API server", VerifierConfig{TrustDomain: testTD, Clusters: with(func(c *ClusterConfig) { c.APIServerURL = "http://127.0.0.1:6443" })},
			[]string{"https"}},
		{"missing CA file", VerifierConfig{TrustDomain: testTD, Clusters: with(func(c *ClusterConfig) { c.CAFile = "/nonexistent/ca.crt" })},
			[]string{"CAFile"}},
		{"bad cluster name", VerifierConfig{TrustDomain: testTD, Clusters: map[string]ClusterConfig{"a/b": f.cfg}},
			[]string{"cluster name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVerifier(tt.cfg)
			if err == nil {
				t.Fatal("NewVerifier succeeded, want an error")
			}
			for _, w := range tt.wantErrs {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestVerifier_WithoutClustersRefusesEverything(t *testing.T) {
	f := newFixture(t)
	v, err := NewVerifier(VerifierConfig{TrustDomain: testTD})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	if _, err := f.attest(t, v, f.evidence(t, f.agentToken(t))); !errors.Is(err, errUnknownCluster) {
		t.Fatalf("err = %v, want %v", err, errUnknownCluster)
	}
}

// The calls the verifier makes are exactly what the server's ClusterRole
// in examples/k8s grants; this pins them down.
func TestVerifier_CallsOnlyTokenReviewPodAndNode(t *testing.T) {
	f := newFixture(t)
	if _, err := f.attest(t, f.v, f.evidence(t, f.agentToken(t))); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range f.cluster.Requests() {
		got = append(got, strings.Join([]string{r.Verb, r.APIGroup, r.Resource, r.Namespace, r.Name}, " "))
	}
	want := []string{
		"create authentication.k8s.io tokenreviews  ",
		"get  pods nhid nhid-agent-x7k2p",
		"get  nodes  node-1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}
