package server

import "time"

// ApprovalsConfig holds the settings of grants waiting for approval
// (docs/approvals.md).
type ApprovalsConfig struct {
	// Timeout is how long a grant waits for its approvals before it is
	// denied ("approval timed out"); default 15m (grant.DefaultApprovalTimeout),
	// between grant.MinApprovalTimeout and grant.MaxApprovalTimeout.
	Timeout time.Duration
}
