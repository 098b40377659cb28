package main

import (
	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/server"
)

// approvalSettings configure grants waiting for approval
// (docs/approvals.md).
type approvalSettings struct {
	// Timeout is how long a grant waits for its approvals before it is
	// denied; default 15m, from 1s to 7 days.
	Timeout string `yaml:"timeout"`
}

// approvalsConfig converts the approvals section.
func approvalsConfig(errs *config.Errors, path string, a approvalSettings) server.ApprovalsConfig {
	return server.ApprovalsConfig{
		Timeout: ttl(errs, config.Join(path, "timeout"), a.Timeout, grant.MinApprovalTimeout, grant.MaxApprovalTimeout),
	}
}
