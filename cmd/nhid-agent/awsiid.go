package main

import (
	"time"

	"github.com/nhid/nhid/attestors/awsiid"
	"github.com/nhid/nhid/pkg/config"
)

// Bounds of agent.aws_iid.timeout.
const (
	minIMDSTimeout = 100 * time.Millisecond
	maxIMDSTimeout = 5 * time.Minute
)

// awsiidSettings is the aws_iid section: the agent half of the EC2
// instance identity document node attestor.
type awsiidSettings struct {
	// MetadataEndpoint is the instance metadata service; default
	// http://169.254.169.254. Set it for an IMDS proxy.
	MetadataEndpoint string `yaml:"metadata_endpoint"`
	// Timeout bounds the IMDS requests of one attestation; default 5s.
	Timeout string `yaml:"timeout"`
}

// awsiidEvidence converts the aws_iid section, checked only when the node
// attestor is aws_iid.
func (s settings) awsiidEvidence(errs *config.Errors) awsiid.EvidenceConfig {
	a := s.AWSIID
	out := awsiid.EvidenceConfig{MetadataEndpoint: a.MetadataEndpoint}
	if s.NodeAttestor != awsiid.Type {
		return out
	}
	const path = "agent.aws_iid"
	if a.MetadataEndpoint != "" {
		if err := awsiid.CheckMetadataEndpoint(a.MetadataEndpoint); err != nil {
			errs.Addf(config.Join(path, "metadata_endpoint"), "%v", err)
		}
	}
	p := config.Join(path, "timeout")
	before := errs.Len()
	out.Timeout = config.Duration(errs, p, a.Timeout)
	if errs.Len() == before && a.Timeout != "" && (out.Timeout < minIMDSTimeout || out.Timeout > maxIMDSTimeout) {
		errs.Addf(p, "%s is outside %s to %s", a.Timeout, minIMDSTimeout, maxIMDSTimeout)
	}
	return out
}
