package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nhid/nhid/internal/kubetest"
)

// psatCluster is a fake Kubernetes cluster with one node running an agent
// pod, and the token files the kubelet would project.
type psatCluster struct {
	kube        *kubetest.Cluster
	node        *corev1.Node
	pod         *corev1.Pod
	serverToken string // the server's own service-account token
	agentToken  string // the agent pod's projected token, audience nhid-server
}

func newPSATCluster(t *testing.T, dir string) *psatCluster {
	t.Helper()
	kube := kubetest.NewCluster(t)
	c := &psatCluster{kube: kube, serverToken: filepath.Join(dir, "server-token"), agentToken: filepath.Join(dir, "agent-token")}
	c.node = kube.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: "node-1", Labels: map[string]string{"topology.kubernetes.io/zone": "zone-a"},
	}})
	c.pod = kube.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "nhid", Name: "nhid-agent-q2w7x"},
		Spec:       corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "nhid-agent"},
	})
	kube.WriteToken(t, c.serverToken, kubetest.TokenRequest{Namespace: "nhid", ServiceAccount: "nhid-server"})
	c.projectAgentToken(t, "nhid-server")
	return c
}

// projectAgentToken writes a fresh agent token, as the kubelet renews it.
func (c *psatCluster) projectAgentToken(t *testing.T, audience string) {
	t.Helper()
	c.kube.WriteToken(t, c.agentToken, kubetest.TokenRequest{
		Namespace: "nhid", ServiceAccount: "nhid-agent", Pod: c.pod, Audiences: []string{audience},
	})
}

func (c *psatCluster) agentID() string {
	return "spiffe://" + trustDomain + "/nhid/agent/k8s_psat/test/" + string(c.node.UID)
}

// startPSATServer starts nhid-server with a config trusting the cluster.
func startPSATServer(t *testing.T, dir string, c *psatCluster) *server {
	t.Helper()
	cfg := filepath.Join(dir, "server.yaml")
	writeFile(t, cfg, fmt.Sprintf(`version: 1
server:
  k8s_psat:
    clusters:
      test:
        api_server_url: %s
        ca_file: %s
        token_file: %s
        service_account_allow_list: ["nhid:nhid-agent"]
        audience: nhid-server
`, c.kube.URL(), c.kube.CAFile(), c.serverToken))
	return startServerAt(t, dir, freePort(t), "--config", cfg)
}

// startPSATAgent starts nhid-agent attesting with k8s_psat; it does not
// wait for the agent to be ready.
func startPSATAgent(t *testing.T, s *server, c *psatCluster) *agent {
	t.Helper()
	return startAgentWithConfig(t, s, fmt.Sprintf("version: 1\nagent:\n  node_attestor: k8s_psat\n  k8s_psat:\n    cluster: test\n    token_path: %s\n", c.agentToken))
}

// nodeShow is what `nhidctl node show -o json` prints.
type nodeShow struct {
	Node nodeJSON `json:"node"`
}

// nodeJSON is the part of a node's JSON the tests read.
type nodeJSON struct {
	SPIFFEID   string   `json:"spiffe_id"`
	Selectors  []string `json:"selectors"`
	Status     string   `json:"status"`
	SVIDSerial string   `json:"svid_serial"`
}

func TestPSAT_AgentAttestsWithItsProjectedTokenAndServesWorkloads(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	c := newPSATCluster(t, dir)
	s := startPSATServer(t, dir, c)
	a := startPSATAgent(t, s, c)
	a.waitReady(t)

	var shown nodeShow
	s.ctlJSON(t, &shown, "node", "show", c.agentID())
	node := shown.Node
	for _, want := range []string{"k8s_psat:cluster:test", "k8s_psat:agent_ns:nhid", "k8s_psat:agent_sa:nhid-agent",
		"k8s_psat:agent_pod_name:nhid-agent-q2w7x", "k8s_psat:agent_node_name:node-1",
		"k8s_psat:agent_node_label:topology.kubernetes.io/zone:zone-a"} {
		if !slices.Contains(node.Selectors, want) {
			t.Errorf("node selectors %v lack %s", node.Selectors, want)
		}
	}

	// A node-alias entry for every node of the cluster, and a workload
	// entry under it: the agent serves it without naming the node.
	alias := "spiffe://" + trustDomain + "/k8s/test-nodes"
	s.mustCtl(t, "entry", "create", "--spiffe-id", alias, "--parent-id", "spiffe://"+trustDomain+"/nhid/server",
		"--selector", "k8s_psat:cluster:test", "--selector", "k8s_psat:agent_sa:nhid-agent")
	id := "spiffe://" + trustDomain + "/k8s/workload"
	s.mustCtl(t, "entry", "create", "--spiffe-id", id, "--parent-id", alias, "--selector", uidSelector())
	probe, _ := copyProbe(t, a.dir, "probe", "")
	if r := fetchEventually(t, a, probe, "x509"); len(r.SPIFFEIDs) != 1 || r.SPIFFEIDs[0] != id {
		t.Fatalf("workload got %v, want [%s]", r.SPIFFEIDs, id)
	}

	// Evicted, the agent attests again with the token the kubelet renewed.
	c.projectAgentToken(t, "nhid-server")
	s.mustCtl(t, "node", "evict", c.agentID())
	eventually(t, 2*waitTimeout, "the node re-attested", func() error {
		var shown nodeShow
		if err := ctlJSONErr(s, &shown, "node", "show", c.agentID()); err != nil {
			return err
		}
		now := shown.Node
		if now.Status != "NODE_STATUS_ACTIVE" || now.SVIDSerial == node.SVIDSerial {
			return fmt.Errorf("node is %s with serial %s", now.Status, now.SVIDSerial)
		}
		return nil
	})
	if r := fetchEventually(t, a, probe, "x509"); len(r.SPIFFEIDs) != 1 || r.SPIFFEIDs[0] != id {
		t.Fatalf("after re-attestation the workload got %v, want [%s]", r.SPIFFEIDs, id)
	}
	if a.exited() {
		t.Fatalf("the agent stopped after an eviction it could recover from:\n%s", a.log())
	}
}

func TestPSAT_TokenForAnotherAudienceIsRefused(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	c := newPSATCluster(t, dir)
	c.projectAgentToken(t, "vault")
	s := startPSATServer(t, dir, c)
	a := startPSATAgent(t, s, c)
	eventually(t, waitTimeout, "the agent gives up", func() error {
		if !a.exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if !strings.Contains(a.log(), "attestation failed: k8s_psat token not authenticated") {
		t.Errorf("agent log lacks the refusal:\n%s", a.log())
	}
	var nodes struct {
		Nodes []nodeJSON `json:"nodes"`
	}
	s.ctlJSON(t, &nodes, "node", "list")
	if len(nodes.Nodes) != 0 {
		t.Errorf("nodes %v after a refused attestation, want none", nodes.Nodes)
	}
	raw, err := os.ReadFile(c.agentToken)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	if sig := token[strings.LastIndex(token, ".")+1:]; strings.Contains(s.log(), sig) || strings.Contains(a.log(), sig) {
		t.Error("a log holds the agent's token")
	}
}

// ctlJSONErr is ctlJSON for use inside eventually.
func ctlJSONErr(s *server, v any, args ...string) error {
	out, err := s.ctl(append([]string{"-o", "json"}, args...)...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}
