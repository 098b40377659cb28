package main

import (
	"os"
	"reflect"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/attestors/awsiid"
	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/attestors/k8s"
	"github.com/nhid/nhid/attestors/psat"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/tpm"
	"github.com/nhid/nhid/pkg/agent"
	"github.com/nhid/nhid/pkg/config"
)

// configVersion is the config file version this binary reads.
const configVersion = 1

// envJoinToken supplies the join token without putting it on the command
// line, where other local users could read it.
const envJoinToken = "NHID_JOIN_TOKEN"

// fileConfig is the config file: `version: 1` and an `agent:` section.
type fileConfig struct {
	Agent settings `yaml:"agent"`
}

// settings are the agent's settings; each has a flag of the same name with
// dashes (--data-dir for data_dir), and flags win over the file.
type settings struct {
	DataDir           string `yaml:"data_dir"`
	Server            string `yaml:"server"`
	TrustDomain       string `yaml:"trust_domain"`
	TrustBundle       string `yaml:"trust_bundle"`
	InsecureBootstrap bool   `yaml:"insecure_bootstrap"`
	NodeAttestor      string `yaml:"node_attestor"`
	JoinToken         string `yaml:"join_token"`
	JoinTokenFile     string `yaml:"join_token_file"`
	Socket            string `yaml:"socket"`
	HealthAddress     string `yaml:"health_address"`
	KeyType           string `yaml:"key_type"`
	MaxPreMintedSVIDs int    `yaml:"max_pre_minted_svids"`
	LogLevel          string `yaml:"log_level"`
	LogFormat         string `yaml:"log_format"`

	// Sections, which have no flags.
	K8sPSAT psatSettings   `yaml:"k8s_psat"`
	TPM     tpmSettings    `yaml:"tpm"`
	AWSIID  awsiidSettings `yaml:"aws_iid"`
	// WorkloadAttestors turns on optional workload attestors (containers.go).
	WorkloadAttestors workloadAttestorSettings `yaml:"workload_attestors"`
}

// defaults are what an unset setting means.
func defaults() settings {
	return settings{
		// The server's default trust domain, so that a default agent
		// joins a default server.
		TrustDomain:   "example.org",
		DataDir:       agent.DefaultDataDir,
		NodeAttestor:  "join_token",
		Socket:        agent.DefaultSocketPath,
		HealthAddress: agent.DefaultHealthAddress,
		LogLevel:      "info",
		LogFormat:     "text",
	}
}

// loadFile reads the config file at path over base: settings the file
// leaves out keep base's values.
func loadFile(path string, base settings) (settings, error) {
	fc := fileConfig{Agent: base}
	if err := config.Load(path, configVersion, &fc); err != nil {
		return settings{}, err
	}
	return fc.Agent, nil
}

// flagName is the flag of the setting with the given YAML key.
func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// applyFlags copies into dst the settings whose flags were given
// (changed reports that), so that flags win over the file, even when
// they set a value to empty (--health-address "" disables the server).
func applyFlags(dst *settings, flags settings, changed func(name string) bool) {
	dv, fv := reflect.ValueOf(dst).Elem(), reflect.ValueOf(flags)
	t := dv.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if changed(flagName(key)) {
			dv.Field(i).Set(fv.Field(i))
		}
	}
}

// resolved is the checked outcome of the settings.
type resolved struct {
	td        spiffeid.TrustDomain
	joinToken string
	psat      psat.EvidenceConfig
	tpm       tpm.EvidenceConfig
	awsiid    awsiid.EvidenceConfig
	k8s       *k8s.Config // nil: the k8s workload attestor is off

	// nil: the container and sigstore workload attestors are off.
	container *container.Config
	sigstore  *sigstore.Config
}

// check validates s, reporting every problem at once with its setting's
// path, and resolves the trust domain and the join token (from
// join_token, join_token_file or $NHID_JOIN_TOKEN, in that order).
func (s settings) check(getenv func(string) string) (resolved, error) {
	var (
		errs config.Errors
		out  resolved
	)
	if s.Server == "" {
		errs.Addf("agent.server", "must be set (--server HOST:PORT)")
	}
	if s.TrustDomain == "" {
		errs.Addf("agent.trust_domain", "must not be empty (--trust-domain, e.g. example.org)")
	} else if td, err := spiffeid.TrustDomainFromString(s.TrustDomain); err != nil {
		errs.Addf("agent.trust_domain", "%q: %v", s.TrustDomain, err)
	} else {
		out.td = td
	}
	if s.TrustBundle != "" && s.InsecureBootstrap {
		errs.Addf("agent.insecure_bootstrap", "cannot be combined with trust_bundle: choose one")
	}
	if s.MaxPreMintedSVIDs < 0 {
		errs.Addf("agent.max_pre_minted_svids", "must not be negative, got %d", s.MaxPreMintedSVIDs)
	}
	if s.LogFormat != "text" && s.LogFormat != "json" {
		errs.Addf("agent.log_format", "must be text or json, got %q", s.LogFormat)
	}
	out.joinToken = s.joinToken(&errs, getenv)
	out.psat = s.psatEvidence(&errs)
	out.tpm = s.tpmEvidence(&errs)
	out.awsiid = s.awsiidEvidence(&errs)
	out.k8s = s.k8sWorkload(&errs, getenv)
	out.container, out.sigstore = s.WorkloadAttestors.convert(&errs)
	return out, errs.Err()
}

func (s settings) joinToken(errs *config.Errors, getenv func(string) string) string {
	switch {
	case s.JoinToken != "" && s.JoinTokenFile != "":
		errs.Addf("agent.join_token_file", "cannot be combined with join_token: choose one")
		return ""
	case s.JoinToken != "":
		return s.JoinToken
	case s.JoinTokenFile != "":
		data, err := os.ReadFile(s.JoinTokenFile)
		if err != nil {
			errs.Addf("agent.join_token_file", "%v", err)
			return ""
		}
		tok := strings.TrimSpace(string(data))
		if tok == "" {
			errs.Addf("agent.join_token_file", "%s is empty", s.JoinTokenFile)
		}
		return tok
	}
	return strings.TrimSpace(getenv(envJoinToken))
}
