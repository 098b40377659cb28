package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/attestors/psat"
)

func TestToNodeAttestors_K8sPSATClustersFromTheFile(t *testing.T) {
	path := writeConfig(t, `version: 1
server:
  data_dir: /var/lib/nhid/server
  k8s_psat:
    clusters:
      prod:
        service_account_allow_list: ["nhid:nhid-agent"]
      edge:
        api_server_url: https://edge.example.com:6443
        ca_file: /etc/nhid/edge-ca.pem
        token_file: /etc/nhid/edge-token
        service_account_allow_list: ["nhid:nhid-agent", "edge:agent"]
        audience: nhid-edge
        allowed_node_label_keys: [topology.kubernetes.io/zone]
`)
	s, err := resolveArgs(t, "--config", path)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	got, err := toNodeAttestors(s)
	if err != nil {
		t.Fatalf("toNodeAttestors: %v", err)
	}
	want := map[string]psat.ClusterConfig{
		"prod": {ServiceAccountAllowList: []string{"nhid:nhid-agent"}},
		"edge": {
			APIServerURL: "https://edge.example.com:6443", CAFile: "/etc/nhid/edge-ca.pem", TokenFile: "/etc/nhid/edge-token",
			ServiceAccountAllowList: []string{"nhid:nhid-agent", "edge:agent"}, Audience: "nhid-edge",
			AllowedNodeLabelKeys: []string{"topology.kubernetes.io/zone"},
		},
	}
	if diff := cmp.Diff(want, got.psatClusters); diff != "" {
		t.Errorf("clusters (-want +got):\n%s", diff)
	}
}

func TestToNodeAttestors_NoSectionMeansNoClusters(t *testing.T) {
	got, err := toNodeAttestors(defaults())
	if err != nil || len(got.psatClusters) != 0 {
		t.Errorf("toNodeAttestors(defaults) = %v, %v; want no clusters", got.psatClusters, err)
	}
}

func TestToNodeAttestors_ReportsEveryK8sPSATProblemWithItsPath(t *testing.T) {
	s := defaults()
	s.K8sPSAT.Clusters = map[string]psatClusterSettings{
		"prod": {
			APIServerURL: "http://kubernetes", CAFile: "ca.crt", TokenFile: "token",
			ServiceAccountAllowList: []string{"nhid-agent", "nhid:"}, Audience: "nhid server",
		},
		"a/b": {ServiceAccountAllowList: nil},
	}
	_, err := toNodeAttestors(s)
	if err == nil {
		t.Fatal("toNodeAttestors succeeded, want errors")
	}
	for _, want := range []string{
		"server.k8s_psat.clusters.a/b: cluster name",
		"server.k8s_psat.clusters.a/b.service_account_allow_list: must name at least one",
		`server.k8s_psat.clusters.prod.api_server_url: "http://kubernetes" must be an https:// URL`,
		`server.k8s_psat.clusters.prod.ca_file: "ca.crt" must be an absolute path`,
		`server.k8s_psat.clusters.prod.token_file: "token" must be an absolute path`,
		`server.k8s_psat.clusters.prod.service_account_allow_list[0]: "nhid-agent": must be namespace:name`,
		`server.k8s_psat.clusters.prod.service_account_allow_list[1]: "nhid:": name`,
		`server.k8s_psat.clusters.prod.audience: "nhid server" must not hold spaces`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%s", want, err)
		}
	}
}
