package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/attestors/k8s"
	"github.com/nhid/nhid/attestors/psat"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestCheck_K8sSectionsFromTheFile(t *testing.T) {
	file := writeFile(t, "agent.yaml", `version: 1
agent:
  server: nhid-server.nhid.svc:8081
  node_attestor: k8s_psat
  k8s_psat:
    cluster: prod
    token_path: /var/run/secrets/tokens/nhid-agent
  workload_attestors:
    k8s:
      kubelet_ca_file: /etc/kubelet-ca.pem
      node_name_env: NODE_NAME
      pod_list_ttl: 5s
      retry_interval: 100ms
      max_retries: 30
`)
	s, err := settingsFor(t, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.check(env(map[string]string{"NODE_NAME": "node-7"}))
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if diff := cmp.Diff(psat.EvidenceConfig{Cluster: "prod", TokenPath: "/var/run/secrets/tokens/nhid-agent"}, r.psat); diff != "" {
		t.Errorf("k8s_psat (-want +got):\n%s", diff)
	}
	want := &k8s.Config{
		KubeletCAFile: "/etc/kubelet-ca.pem", KubeletServerName: "node-7", NodeName: "node-7",
		PodListTTL: 5 * time.Second, RetryInterval: 100 * time.Millisecond, MaxRetries: 30,
	}
	if diff := cmp.Diff(want, r.k8s); diff != "" {
		t.Errorf("k8s (-want +got):\n%s", diff)
	}
}

func TestCheck_K8sWorkloadAttestorIsOffWithoutItsSection(t *testing.T) {
	s := defaults()
	s.Server = "server:8081"
	r, err := s.check(env(nil))
	if err != nil || r.k8s != nil {
		t.Errorf("check = %+v, %v; want no k8s config", r.k8s, err)
	}
}

func TestCheck_ReportsEveryK8sProblemWithItsSetting(t *testing.T) {
	s := defaults()
	s.Server, s.NodeAttestor = "server:8081", psat.Type
	s.K8sPSAT = psatSettings{Cluster: "a/b", TokenPath: "token"}
	s.WorkloadAttestors.K8s = &k8sSettings{
		KubeletURL: "http://127.0.0.1:10250", TokenFile: "token", NodeNameEnv: "NODE_NAME",
		PodListTTL: "soon", MaxRetries: -1, ReadOnlyPort: 0,
	}
	_, err := s.check(env(nil))
	if err == nil {
		t.Fatal("check succeeded, want errors")
	}
	for _, want := range []string{
		`agent.k8s_psat.cluster: cluster name "a/b"`,
		`agent.k8s_psat.token_path: "token" must be an absolute path`,
		`agent.workload_attestors.k8s.pod_list_ttl: "soon" is not a duration`,
		`agent.workload_attestors.k8s.kubelet_url: "http://127.0.0.1:10250" must be an https:// URL`,
		`agent.workload_attestors.k8s.token_file: "token" must be an absolute path`,
		"agent.workload_attestors.k8s.kubelet_ca_file: must be set to verify the kubelet",
		"agent.workload_attestors.k8s.max_retries: must not be negative",
		"agent.workload_attestors.k8s.node_name_env: $NODE_NAME is empty",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%s", want, err)
		}
	}
}

// An explicitly insecure or read-only kubelet connection needs no CA, and
// the node name is then not used as a certificate name.
func TestCheck_KubeletWithoutVerificationNeedsNoCA(t *testing.T) {
	for name, k := range map[string]*k8sSettings{
		"skip verify":    {InsecureSkipKubeletVerify: true, NodeNameEnv: "NODE_NAME"},
		"read-only port": {ReadOnlyPort: 10255, NodeNameEnv: "NODE_NAME"},
	} {
		t.Run(name, func(t *testing.T) {
			s := defaults()
			s.Server, s.WorkloadAttestors.K8s = "server:8081", k
			r, err := s.check(env(map[string]string{"NODE_NAME": "node-1"}))
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			if r.k8s.KubeletServerName != "" || r.k8s.NodeName != "node-1" {
				t.Errorf("server name %q, node name %q; want none and node-1", r.k8s.KubeletServerName, r.k8s.NodeName)
			}
		})
	}
}

func TestExecute_Validate(t *testing.T) {
	good := writeFile(t, "good.yaml", "version: 1\nagent:\n  server: s:8081\n  node_attestor: k8s_psat\n  k8s_psat:\n    cluster: prod\n")
	bad := writeFile(t, "bad.yaml", "version: 1\nagent:\n  server: s:8081\n  node_attestor: k8s_psat\n")
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderrIn string
	}{
		{"valid", []string{"validate", "--config", good}, 0, "configuration is valid", ""},
		{"invalid", []string{"validate", "--config", bad}, 2, "", "agent.k8s_psat.cluster"},
		{"no config", []string{"validate"}, 2, "", "--config FILE is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := execute(context.Background(), tt.args, &stdout, &stderr, env(nil))
			if code != tt.code || !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.stderrIn) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stderrIn)
			}
		})
	}
}

// On Kubernetes the sigstore attestor can verify the images the kubelet
// reports, so it needs either the container or the k8s section.
func TestCheck_SigstoreWithTheK8sAttestorAlone(t *testing.T) {
	key := writeFile(t, "cosign.pub", "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
	s := defaults()
	s.Server = "server:8081"
	s.WorkloadAttestors.Sigstore = &sigstoreSettings{PublicKeys: []publicKeySetting{{Name: "release", File: key}}}
	if _, err := s.check(env(nil)); err == nil || !strings.Contains(err.Error(), "needs the container section") {
		t.Fatalf("sigstore alone: err = %v, want it to need an image source", err)
	}
	s.WorkloadAttestors.K8s = &k8sSettings{InsecureSkipKubeletVerify: true}
	r, err := s.check(env(nil))
	if err != nil {
		t.Fatalf("sigstore with k8s: %v", err)
	}
	if r.sigstore == nil || r.k8s == nil || r.container != nil {
		t.Errorf("resolved sigstore %v, k8s %v, container %v; want sigstore and k8s only", r.sigstore != nil, r.k8s != nil, r.container != nil)
	}
}
