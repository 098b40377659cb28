package main

import (
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nhid/nhid/attestors/awsiid"
	"github.com/nhid/nhid/attestors/psat"
	"github.com/nhid/nhid/attestors/tpm"
	"github.com/nhid/nhid/pkg/config"
)

// psatSettings is the k8s_psat section: the clusters whose nhid-agent pods
// may attest with projected service-account tokens.
type psatSettings struct {
	Clusters map[string]psatClusterSettings `yaml:"clusters"`
}

// psatClusterSettings is one cluster; unset fields take the in-cluster
// defaults of attestors/psat (the server's own service account).
type psatClusterSettings struct {
	APIServerURL            string   `yaml:"api_server_url"`
	CAFile                  string   `yaml:"ca_file"`
	TokenFile               string   `yaml:"token_file"`
	ServiceAccountAllowList []string `yaml:"service_account_allow_list"`
	Audience                string   `yaml:"audience"`
	AllowedNodeLabelKeys    []string `yaml:"allowed_node_label_keys"`
}

// nodeAttestors is the converted configuration of the node attestors that
// have settings of their own.
type nodeAttestors struct {
	psatClusters map[string]psat.ClusterConfig
	tpm          *tpm.VerifierConfig    // nil: the tpm attestor is off
	awsiid       *awsiid.VerifierConfig // nil: the aws_iid attestor is off
}

// toNodeAttestors converts the node attestors' sections, reporting every
// problem at once with its path. Files are not opened here: the verifiers
// read them when the server starts, so `validate` works away from the
// cluster.
func toNodeAttestors(s settings) (nodeAttestors, error) {
	var errs config.Errors
	out := nodeAttestors{psatClusters: psatClusters(&errs, "server.k8s_psat.clusters", s.K8sPSAT.Clusters)}
	out.tpm = tpmConfig(&errs, "server.tpm", s.TPM)
	out.awsiid = awsiidConfig(&errs, "server.aws_iid", s.AWSIID)
	return out, errs.Err()
}

func psatClusters(errs *config.Errors, path string, in map[string]psatClusterSettings) map[string]psat.ClusterConfig {
	out := make(map[string]psat.ClusterConfig, len(in))
	for _, name := range sortedKeys(in) {
		c, p := in[name], config.Join(path, name)
		if err := psat.CheckClusterName(name); err != nil {
			errs.Addf(p, "%v", err)
		}
		out[name] = psat.ClusterConfig{
			APIServerURL:            httpsURL(errs, config.Join(p, "api_server_url"), c.APIServerURL),
			CAFile:                  absPath(errs, config.Join(p, "ca_file"), c.CAFile),
			TokenFile:               absPath(errs, config.Join(p, "token_file"), c.TokenFile),
			ServiceAccountAllowList: allowList(errs, config.Join(p, "service_account_allow_list"), c.ServiceAccountAllowList),
			Audience:                audience(errs, config.Join(p, "audience"), c.Audience),
			AllowedNodeLabelKeys:    c.AllowedNodeLabelKeys,
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func httpsURL(errs *config.Errors, path, s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		errs.Addf(path, "%q must be an https:// URL", s)
	}
	return s
}

func absPath(errs *config.Errors, path, s string) string {
	if s != "" && !filepath.IsAbs(s) {
		errs.Addf(path, "%q must be an absolute path", s)
	}
	return s
}

func allowList(errs *config.Errors, path string, list []string) []string {
	if len(list) == 0 {
		errs.Addf(path, "must name at least one service account, namespace:name")
	}
	for i, sa := range list {
		if err := psat.CheckServiceAccount(sa); err != nil {
			errs.Addf(config.Index(path, i), "%v", err)
		}
	}
	return list
}

func audience(errs *config.Errors, path, s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' }) {
		errs.Addf(path, "%q must not hold spaces or control characters", s)
	}
	return s
}
