// Package all is the explicit list of nhid's built-in attestors: the
// binaries build their attestors here, and adding one means adding it to
// these functions (there is no registration by init()).
package all

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nhid/nhid/attestors/jointoken"
	"github.com/nhid/nhid/attestors/unix"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// WorkloadConfig configures the agent's workload attestors.
type WorkloadConfig struct {
	// Log is the default logger of every attestor whose own config has none.
	Log *slog.Logger
	// Unix configures the unix attestor.
	Unix unix.Config
}

// WorkloadAttestors builds every built-in workload attestor.
func WorkloadAttestors(cfg WorkloadConfig) ([]attestor.Workload, error) {
	if cfg.Unix.Log == nil {
		cfg.Unix.Log = cfg.Log
	}
	u, err := unix.New(cfg.Unix)
	if err != nil {
		return nil, fmt.Errorf("workload attestor %s: %w", unix.Type, err)
	}
	return []attestor.Workload{u}, nil
}

// NodeVerifierConfig configures the server halves of the node attestors.
type NodeVerifierConfig struct {
	// TrustDomain is the domain agent IDs are minted in.
	TrustDomain spiffeid.TrustDomain
	// Tokens is the join-token store.
	Tokens jointoken.TokenStore
	// Clock decides expiry. Defaults to the wall clock.
	Clock clock.Clock
	// Log defaults to slog.Default().
	Log *slog.Logger
}

// NodeVerifiers builds the server half of every built-in node attestor.
// Their types are distinct; the agent API picks one by the type the agent
// names.
func NodeVerifiers(cfg NodeVerifierConfig) ([]attestor.NodeVerifier, error) {
	jt, err := jointoken.NewVerifier(jointoken.VerifierConfig{
		TrustDomain: cfg.TrustDomain,
		Tokens:      cfg.Tokens,
		Clock:       cfg.Clock,
		Log:         cfg.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("node attestor %s: %w", jointoken.Type, err)
	}
	return []attestor.NodeVerifier{jt}, nil
}

// NodeEvidenceConfig holds what the agent halves need; only the fields of
// the chosen attestor are read.
type NodeEvidenceConfig struct {
	// JoinToken is the token for the join_token attestor.
	JoinToken string
}

// NodeEvidenceTypes lists the node attestor types NodeEvidence knows.
func NodeEvidenceTypes() []string {
	return []string{jointoken.Type}
}

// NodeEvidence builds the agent half of the node attestor named
// attestorType.
func NodeEvidence(attestorType string, cfg NodeEvidenceConfig) (attestor.NodeEvidence, error) {
	switch attestorType {
	case jointoken.Type:
		if cfg.JoinToken == "" {
			return nil, errors.New("node attestor join_token: JoinToken: must be set")
		}
		ev, err := jointoken.NewEvidence(cfg.JoinToken)
		if err != nil {
			return nil, fmt.Errorf("node attestor join_token: %w", err)
		}
		return ev, nil
	default:
		return nil, fmt.Errorf("node attestor %q: unknown; known attestors: %s",
			attestorType, strings.Join(NodeEvidenceTypes(), ", "))
	}
}
