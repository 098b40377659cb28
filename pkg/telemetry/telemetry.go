// Package telemetry owns the names shared by logs and metrics, so that every
// component spells a key the same way and dashboards do not drift.
package telemetry

// Log keys. Values under these keys are never secrets: tokens and private
// keys are not logged, only their ids or fingerprints.
const (
	SPIFFEID    = "spiffe_id"
	EntryID     = "entry_id"
	ParentID    = "parent_id"
	NodeID      = "node_id"
	PID         = "pid"
	UID         = "uid"
	GID         = "gid"
	Method      = "method"
	Attestor    = "attestor"
	Selectors   = "selectors"
	Serial      = "serial"
	TokenID     = "token_id"
	Revision    = "revision"
	Count       = "count"
	Duration    = "duration"
	Code        = "code"
	Error       = "error"
	Address     = "address"
	Path        = "path"
	TrustDomain = "trust_domain"
	ExpiresAt   = "expires_at"
	Reason      = "reason"
	Component   = "component"
	KeyID       = "key_id"
	Status      = "status"
	Hint        = "hint"
)

// Namespace prefixes every nhid metric name.
const Namespace = "nhid"
