package main

import (
	"net/url"
	"path/filepath"
	"strings"

	"github.com/nhid/nhid/attestors/k8s"
	"github.com/nhid/nhid/attestors/psat"
	"github.com/nhid/nhid/pkg/config"
)

// psatSettings is the k8s_psat section: the agent half of the Kubernetes
// node attestor.
type psatSettings struct {
	// Cluster names the cluster as the server's k8s_psat.clusters does.
	Cluster string `yaml:"cluster"`
	// TokenPath is the projected service-account token (audience
	// nhid-server); default psat.DefaultTokenPath.
	TokenPath string `yaml:"token_path"`
}

// k8sSettings is the workload_attestors.k8s section; present (even
// empty: "k8s: {}"), it turns the k8s workload attestor on.
type k8sSettings struct {
	KubeletURL                string `yaml:"kubelet_url"`
	KubeletCAFile             string `yaml:"kubelet_ca_file"`
	KubeletServerName         string `yaml:"kubelet_server_name"`
	InsecureSkipKubeletVerify bool   `yaml:"insecure_skip_kubelet_verify"`
	TokenFile                 string `yaml:"token_file"`
	ReadOnlyPort              int    `yaml:"read_only_port"`
	// NodeNameEnv is the environment variable holding the node's name
	// (the downward API's spec.nodeName). The node name limits the pods
	// considered and, unless kubelet_server_name is set, is the name the
	// kubelet's certificate must carry.
	NodeNameEnv   string `yaml:"node_name_env"`
	PodListTTL    string `yaml:"pod_list_ttl"`
	RetryInterval string `yaml:"retry_interval"`
	MaxRetries    int    `yaml:"max_retries"`
}

// psatEvidence converts the k8s_psat section; it is only needed, and only
// checked, when k8s_psat is the node attestor.
func (s settings) psatEvidence(errs *config.Errors) psat.EvidenceConfig {
	out := psat.EvidenceConfig{Cluster: s.K8sPSAT.Cluster, TokenPath: s.K8sPSAT.TokenPath}
	if s.NodeAttestor != psat.Type {
		return out
	}
	if err := psat.CheckClusterName(out.Cluster); err != nil {
		errs.Addf("agent.k8s_psat.cluster", "%v (required with node_attestor k8s_psat)", err)
	}
	if out.TokenPath != "" && !filepath.IsAbs(out.TokenPath) {
		errs.Addf("agent.k8s_psat.token_path", "%q must be an absolute path", out.TokenPath)
	}
	return out
}

// k8sWorkload converts the workload_attestors.k8s section; nil when it is
// absent.
func (s settings) k8sWorkload(errs *config.Errors, getenv func(string) string) *k8s.Config {
	k := s.WorkloadAttestors.K8s
	if k == nil {
		return nil
	}
	const path = "agent.workload_attestors.k8s"
	out := &k8s.Config{
		KubeletURL:                k.KubeletURL,
		KubeletCAFile:             k.KubeletCAFile,
		KubeletServerName:         k.KubeletServerName,
		InsecureSkipKubeletVerify: k.InsecureSkipKubeletVerify,
		TokenFile:                 k.TokenFile,
		ReadOnlyPort:              k.ReadOnlyPort,
		PodListTTL:                config.Duration(errs, config.Join(path, "pod_list_ttl"), k.PodListTTL),
		RetryInterval:             config.Duration(errs, config.Join(path, "retry_interval"), k.RetryInterval),
		MaxRetries:                k.MaxRetries,
	}
	if k.KubeletURL != "" {
		if u, err := url.Parse(k.KubeletURL); err != nil || u.Scheme != "https" || u.Host == "" {
			errs.Addf(config.Join(path, "kubelet_url"), "%q must be an https:// URL", k.KubeletURL)
		}
	}
	for _, f := range []struct{ key, file string }{{"kubelet_ca_file", k.KubeletCAFile}, {"token_file", k.TokenFile}} {
		if f.file != "" && !filepath.IsAbs(f.file) {
			errs.Addf(config.Join(path, f.key), "%q must be an absolute path", f.file)
		}
	}
	secure := k.ReadOnlyPort == 0 && !k.InsecureSkipKubeletVerify
	if secure && k.KubeletCAFile == "" {
		errs.Addf(config.Join(path, "kubelet_ca_file"), "must be set to verify the kubelet "+
			"(or set insecure_skip_kubelet_verify, or read_only_port)")
	}
	if k.ReadOnlyPort < 0 || k.ReadOnlyPort > 65535 {
		errs.Addf(config.Join(path, "read_only_port"), "must be a port number, got %d", k.ReadOnlyPort)
	}
	if k.MaxRetries < 0 {
		errs.Addf(config.Join(path, "max_retries"), "must not be negative, got %d", k.MaxRetries)
	}
	if k.NodeNameEnv != "" {
		out.NodeName = strings.TrimSpace(getenv(k.NodeNameEnv))
		if out.NodeName == "" {
			errs.Addf(config.Join(path, "node_name_env"), "$%s is empty: set it from the downward API (spec.nodeName)", k.NodeNameEnv)
		}
		if out.KubeletServerName == "" && secure {
			out.KubeletServerName = out.NodeName
		}
	}
	return out
}
