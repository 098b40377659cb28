// Package attestor defines the contracts of workload and node attestors and
// the conformance suites (attestortest) every implementation passes.
// Implementations live under attestors/ and are listed explicitly in
// attestors/all; there is no registration by init().
package attestor

import (
	"context"
	"errors"

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
