package main

import (
	"crypto/x509"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/nhid/nhid/attestors/tpm"
	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/svid"
)

// maxRequoteInterval bounds server.tpm.requote_interval: a node quoted
// less than daily is hardly attested continuously.
const maxRequoteInterval = 24 * time.Hour

// tpmSettings is the tpm section: which EKs are trusted, which PCRs are
// quoted, the golden sets their values are held to, and how often
// connected nodes are quoted again. Without the section the tpm node
// attestor is off. See docs/attestors.md.
type tpmSettings struct {
	EKCAFiles       []string `yaml:"ek_ca_files"`
	EKHashAllowList []string `yaml:"ek_hash_allow_list"`
	PCRSelection    []int    `yaml:"pcr_selection"`
	// PCRPolicies maps a golden set's name to PCR indexes and, for each,
	// the SHA-256 values (hex) it may hold.
	PCRPolicies     map[string]map[int][]string `yaml:"pcr_policies"`
	RequoteInterval string                      `yaml:"requote_interval"`
}

func (s tpmSettings) isSet() bool {
	return len(s.EKCAFiles) > 0 || len(s.EKHashAllowList) > 0 || len(s.PCRSelection) > 0 ||
		len(s.PCRPolicies) > 0 || s.RequoteInterval != ""
}

// tpmConfig converts the tpm section; nil when it is absent. The EK CA
// files are read here, so a missing or malformed one is reported with its
// setting's path by `validate` as well as at start.
func tpmConfig(errs *config.Errors, path string, s tpmSettings) *tpm.VerifierConfig {
	if !s.isSet() {
		return nil
	}
	if len(s.EKCAFiles) == 0 && len(s.EKHashAllowList) == 0 {
		errs.Addf(path, "set ek_ca_files, ek_hash_allow_list or both: without either no TPM is trusted")
	}
	out := &tpm.VerifierConfig{EKHashAllowList: s.EKHashAllowList, PCRSelection: s.PCRSelection}
	for i, file := range s.EKCAFiles {
		certs, err := loadCAFile(file)
		if err != nil {
			errs.Addf(config.Index(config.Join(path, "ek_ca_files"), i), "%v", err)
		}
		out.EKCAs = append(out.EKCAs, certs...)
	}
	for i, h := range s.EKHashAllowList {
		if _, err := tpm.ParseDigest(h); err != nil {
			errs.Addf(config.Index(config.Join(path, "ek_hash_allow_list"), i), "%v", err)
		}
	}
	for i, idx := range s.PCRSelection {
		if err := tpm.CheckPCRIndex(idx); err != nil {
			errs.Addf(config.Index(config.Join(path, "pcr_selection"), i), "%v", err)
		}
	}
	out.PCRPolicies = pcrPolicies(errs, config.Join(path, "pcr_policies"), s)
	out.RequoteInterval = ttl(errs, config.Join(path, "requote_interval"), s.RequoteInterval, tpm.MinRequoteInterval, maxRequoteInterval)
	return out
}

func pcrPolicies(errs *config.Errors, path string, s tpmSettings) []tpm.PCRPolicy {
	selection := s.PCRSelection
	if len(selection) == 0 {
		selection = tpm.DefaultPCRSelection
	}
	var out []tpm.PCRPolicy
	for _, name := range slices.Sorted(maps.Keys(s.PCRPolicies)) {
		p := config.Join(path, name)
		if err := tpm.CheckPolicyName(name); err != nil {
			errs.Addf(p, "name %v", err)
		}
		pcrs := s.PCRPolicies[name]
		if len(pcrs) == 0 {
			errs.Addf(p, "lists no PCRs")
		}
		for _, idx := range slices.Sorted(maps.Keys(pcrs)) {
			at := config.Join(p, fmt.Sprint(idx))
			if !slices.Contains(selection, idx) {
				errs.Addf(at, "PCR %d is not in pcr_selection %v, so it is never quoted", idx, selection)
			}
			if len(pcrs[idx]) == 0 {
				errs.Addf(at, "lists no values")
			}
			for j, v := range pcrs[idx] {
				if _, err := tpm.ParseDigest(v); err != nil {
					errs.Addf(config.Index(at, j), "%v", err)
				}
			}
		}
		out = append(out, tpm.PCRPolicy{Name: name, PCRs: pcrs})
	}
	return out
}

// loadCAFile reads the CA certificates of a PEM file.
func loadCAFile(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	certs, err := svid.CertificatesInPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	for i, c := range certs {
		if !c.IsCA {
			return nil, fmt.Errorf("%s: certificate %d (%s) is not a CA certificate", file, i+1, c.Subject)
		}
	}
	return certs, nil
}
