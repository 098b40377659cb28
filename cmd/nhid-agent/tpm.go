package main

import (
	"net"
	"path/filepath"
	"strconv"

	"github.com/nhid/nhid/attestors/tpm"
	"github.com/nhid/nhid/pkg/config"
)

// tpmSettings is the tpm section: the agent half of the TPM node attestor.
// The PCRs to quote come from the server with each challenge.
type tpmSettings struct {
	// Device is the TPM device; default /dev/tpmrm0.
	Device string `yaml:"device"`
	// SWTPM is the HOST:PORT of a swtpm TCP command channel, for tests and
	// development; it replaces the device.
	SWTPM string `yaml:"swtpm"`
	// AKType is the attestation key's algorithm: ec-p256 (default) or
	// rsa-2048.
	AKType string `yaml:"ak_type"`
}

// tpmEvidence converts the tpm section, checked only when the node
// attestor is tpm.
func (s settings) tpmEvidence(errs *config.Errors) tpm.EvidenceConfig {
	t := s.TPM
	out := tpm.EvidenceConfig{Device: t.Device, SWTPM: t.SWTPM}
	if s.NodeAttestor != tpm.Type {
		return out
	}
	const path = "agent.tpm"
	if t.Device != "" && t.SWTPM != "" {
		errs.Addf(config.Join(path, "swtpm"), "cannot be combined with device: choose one")
	}
	if t.Device != "" && !filepath.IsAbs(t.Device) {
		errs.Addf(config.Join(path, "device"), "%q must be an absolute path", t.Device)
	}
	if t.SWTPM != "" {
		if host, port, err := net.SplitHostPort(t.SWTPM); err != nil || host == "" {
			errs.Addf(config.Join(path, "swtpm"), "%q is not HOST:PORT", t.SWTPM)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			errs.Addf(config.Join(path, "swtpm"), "%q: port must be a number from 1 to 65535", t.SWTPM)
		}
	}
	ak, err := tpm.ParseAKType(t.AKType)
	if err != nil {
		errs.Addf(config.Join(path, "ak_type"), "%v", err)
	}
	out.AKType = ak
	return out
}
