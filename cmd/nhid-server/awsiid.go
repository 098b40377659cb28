package main

import (
	"os"
	"time"

	"github.com/nhid/nhid/attestors/awsiid"
	"github.com/nhid/nhid/pkg/config"
)

// Bounds of server.aws_iid.max_instance_age.
const (
	minInstanceAge = time.Minute
	maxInstanceAge = 10 * 365 * 24 * time.Hour
)

// awsiidSettings is the aws_iid section: which AWS accounts' (and
// regions') EC2 instances may attest with their instance identity
// document, and AWS's certificates that verify it. Off unless enabled.
// See docs/attestors.md.
type awsiidSettings struct {
	Enabled bool `yaml:"enabled"`
	// CertificatesFile holds AWS's public "RSA" certificates (PEM) of the
	// regions whose instances attest.
	CertificatesFile string   `yaml:"certificates_file"`
	Accounts         []string `yaml:"accounts"`
	Regions          []string `yaml:"regions"`
	MaxInstanceAge   string   `yaml:"max_instance_age"`
}

// awsiidConfig converts the aws_iid section; nil when it is not enabled.
// The certificates file is read here, so a missing or malformed one is
// reported with its setting's path by `validate` as well as at start.
func awsiidConfig(errs *config.Errors, path string, s awsiidSettings) *awsiid.VerifierConfig {
	if !s.Enabled {
		return nil
	}
	out := &awsiid.VerifierConfig{Accounts: s.Accounts, Regions: s.Regions}
	if p := config.Join(path, "certificates_file"); s.CertificatesFile == "" {
		errs.Addf(p, "must be set: a PEM file of AWS's RSA certificates for instance identity documents")
	} else if data, err := os.ReadFile(s.CertificatesFile); err != nil {
		errs.Addf(p, "%v", err)
	} else if out.Certificates, err = awsiid.ParseCertificates(data); err != nil {
		errs.Addf(p, "%s: %v", s.CertificatesFile, err)
	}
	if len(s.Accounts) == 0 {
		// An empty list must not mean "every AWS account".
		errs.Addf(config.Join(path, "accounts"), "must name at least one AWS account ID: without it no instance may attest")
	}
	for i, a := range s.Accounts {
		if err := awsiid.CheckAccountID(a); err != nil {
			errs.Addf(config.Index(config.Join(path, "accounts"), i), "%v", err)
		}
	}
	for i, r := range s.Regions {
		if err := awsiid.CheckRegion(r); err != nil {
			errs.Addf(config.Index(config.Join(path, "regions"), i), "%v", err)
		}
	}
	out.MaxInstanceAge = ttl(errs, config.Join(path, "max_instance_age"), s.MaxInstanceAge, minInstanceAge, maxInstanceAge)
	return out
}
