// Package attestor defines the contracts of workload and node attestors and
// the conformance suites (attestortest) every implementation passes.
// Implementations live under attestors/ and are listed explicitly in
// attestors/all; there is no registration by init().
package attestor

import (
	"context"
	"errors"
	"time"

	"github.com/nhid/nhid/pkg/selector"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrAttestationFailed marks evidence that was checked and refused (as
// opposed to an internal failure). Attestors wrap it with the reason; the
// API answers PermissionDenied and logs the reason, never sending it to an
// unauthenticated peer in more detail than "attestation failed: <reason>".
var ErrAttestationFailed = errors.New("attestation failed")

// Workload finds the selectors of a local process. Callers pin the process
// (pkg/peercred) and check it is still alive after Attest returns, so an
// attestor may read /proc/<pid> without guarding against PID reuse itself.
type Workload interface {
	// Type is the selector type the attestor produces ("unix", "k8s", ...).
	Type() string
	// Attest returns the process's selectors. A process the attestor has
	// nothing to say about gets no selectors and no error.
	Attest(ctx context.Context, pid int32) ([]selector.Selector, error)
}

// NodeResult is what a successful node attestation establishes.
type NodeResult struct {
	// AgentID is the SPIFFE ID the node gets.
	AgentID spiffeid.ID
	// Selectors describe the node, for node-alias entries.
	Selectors []selector.Selector
	// CanReattest says whether the node may attest again with fresh
	// evidence after eviction (false for single-use join tokens).
	CanReattest bool
	// TrustOnFirstUse marks evidence that could be replayed by whoever
	// copied it (a cloud instance identity document is the same at every
	// attestation): the server then admits the AgentID only while no node
	// record of it exists or an operator evicted it, so a copy cannot
	// attest a second agent next to the genuine one.
	TrustOnFirstUse bool
	// State is what a NodeReattester needs to attest the node again while
	// it is connected (for TPM: the attestation key bound to the EK). The
	// server stores it with the node and hands it back to Reattest. It is
	// not secret. Nil for attestors that do not reattest.
	State []byte
}

// Challenger sends a challenge to the attesting agent and returns its answer.
type Challenger func(ctx context.Context, challenge []byte) (response []byte, err error)

// NodeVerifier is the server half of a node attestor.
type NodeVerifier interface {
	// Type names the attestor ("join_token", "tpm", ...); the agent sends it.
	Type() string
	// Attest checks the agent's evidence, using challenge for any
	// challenge/response rounds. Refused evidence wraps ErrAttestationFailed.
	Attest(ctx context.Context, payload []byte, challenge Challenger) (NodeResult, error)
}

// NodeEvidence is the agent half of a node attestor.
type NodeEvidence interface {
	// Type names the attestor; it must equal the server half's Type.
	Type() string
	// Evidence is the first payload sent to the server.
	Evidence(ctx context.Context) ([]byte, error)
	// Respond answers one server challenge.
	Respond(ctx context.Context, challenge []byte) ([]byte, error)
}

// ReattestNode is what the server knows of a node it attests again.
type ReattestNode struct {
	// AgentID is the node's SPIFFE ID.
	AgentID spiffeid.ID
	// State is the NodeResult.State of the node's last attestation.
	State []byte
}

// NodeReattester is a NodeVerifier that keeps attesting the nodes it
// admitted (continuous attestation, such as TPM quotes of the measured
// boot state). While a node is connected, the server calls Reattest about
// every ReattestInterval with a Challenger that reaches the agent's
// NodeEvidence.Respond. Evidence that fails (ErrAttestationFailed) makes
// the node untrusted until a later Reattest succeeds; a successful result
// replaces the node's selectors and state.
type NodeReattester interface {
	NodeVerifier
	// ReattestInterval is how often each node is attested again.
	ReattestInterval() time.Duration
	// Reattest checks fresh evidence from the node. The result's AgentID
	// must be node.AgentID. Refused evidence wraps ErrAttestationFailed.
	Reattest(ctx context.Context, node ReattestNode, challenge Challenger) (NodeResult, error)
}
