package audit

import "context"

// Actions name what an audit record is about. They are stable: tools and
// SIEM rules match on them (docs/audit.md lists them).
const (
	ActionNodeAttest         = "node.attest"          // a node attestation, passed or failed
	ActionNodeReattest       = "node.reattest"        // a TPM re-quote changed the node's trust
	ActionWorkloadAttestFail = "workload.attest"      // an agent reported a workload attestation failure
	ActionSVIDMint           = "svid.mint"            // one batch of X.509-SVIDs or one JWT-SVID
	ActionGrantDecide        = "grant.decide"         // policy's decision on a grant request
	ActionGrantEnd           = "grant.end"            // a grant released, revoked or expired by a person or the server
	ActionApprovalDecide     = "approval.decide"      // one person's approval or rejection
	ActionAdminPrefix        = "admin."               // admin changes: admin.entry.create, admin.node.ban, ...
	ActionReputationChange   = "reputation.change"    // a score moved (event, reset)
	ActionReputationAlert    = "reputation.threshold" // a score crossed alert or restrict
)

// Actions the audit log records about itself and the server.
const (
	// ActionAuditKey announces a server's checkpoint signing key (details:
	// key_id, public_key); the server records it at every start.
	ActionAuditKey = "audit.key"
	// ActionServerStop is a clean shutdown, the server's last record.
	ActionServerStop = "server.stop"
)

// Outcomes of a record.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	OutcomeDenied  = "denied"
)

// Event is what a component hands the audit log; the log adds seq, time,
// server and the hashes. Details must be JSON-marshalable and never hold
// secrets (tokens, keys).
type Event struct {
	Actor      string
	OnBehalfOf string
	Action     string
	Target     string
	Outcome    string
	Reason     string
	Details    map[string]any
}

// Recorder takes audit events. Record never blocks for long and never
// fails its caller: the log batches events and retries its own writes.
type Recorder interface {
	Record(ctx context.Context, ev Event)
}

// Discard is a Recorder that drops every event, for components built
// without an audit log (tests, tools).
var Discard Recorder = discard{}

type discard struct{}

func (discard) Record(context.Context, Event) {}

// OrDiscard returns r, or Discard when r is nil.
func OrDiscard(r Recorder) Recorder {
	if r == nil {
		return Discard
	}
	return r
}
