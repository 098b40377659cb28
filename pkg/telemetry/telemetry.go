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

// Log keys of container and image attestation.
const (
	ContainerID = "container_id"
	Image       = "image"
	Digest      = "digest"
)

// Log keys of Kubernetes attestation.
const (
	Cluster        = "cluster"
	PodNamespace   = "pod_namespace"
	ServiceAccount = "service_account"
	PodName        = "pod_name"
	NodeName       = "node_name"
)

// Log keys of grant decisions. The grant's Txn-Token is never logged.
const (
	GrantID = "grant_id"
	Rule    = "rule"
	Effect  = "effect"
	Scopes  = "scopes"
)

// Log keys of TPM attestation.
const (
	// EKPubHash is a TPM's identity: the hex SHA-256 of its EK public key.
	EKPubHash = "ek_pubhash"
)

// Log keys of audit records. Until the audit trail exists, an audit record
// is a log line with the message "audit" and its event name under Event.
const (
	Event = "event"
)

// Namespace prefixes every nhid metric name.
const Namespace = "nhid"
