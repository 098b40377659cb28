package agentapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/selector"
)

// challengeType is a node attestor for tests: it asks Rounds challenges
// (answered by their SHA-256) and grants the node the selectors named in
// the payload. The join-token attestor has neither challenges nor node
// selectors, which alias entries and the challenge bounds need.
const challengeType = "test_challenge"

type challengeVerifier struct{}

type challengeSpec struct {
	NodeID    string   `json:"node_id"`
	Rounds    int      `json:"rounds"`
	Selectors []string `json:"selectors"`
	// TOFU makes the result trust-on-first-use, as replayable evidence.
	TOFU bool `json:"tofu"`
}

func challengePayload(nodeID string, rounds int, sels ...string) []byte {
	b, _ := json.Marshal(challengeSpec{NodeID: nodeID, Rounds: rounds, Selectors: sels})
	return b
}

func answerChallenge(c []byte) []byte {
	sum := sha256.Sum256(c)
	return sum[:]
}

func (challengeVerifier) Type() string { return challengeType }

func (challengeVerifier) Attest(ctx context.Context, payload []byte, challenge attestor.Challenger) (attestor.NodeResult, error) {
	var spec challengeSpec
	if err := json.Unmarshal(payload, &spec); err != nil {
		return attestor.NodeResult{}, fmt.Errorf("%w: payload: %v", attestor.ErrAttestationFailed, err)
	}
	for range spec.Rounds {
		nonce := make([]byte, 16)
		if _, err := rand.Read(nonce); err != nil {
			return attestor.NodeResult{}, err
		}
		resp, err := challenge(ctx, nonce)
		if err != nil {
			return attestor.NodeResult{}, fmt.Errorf("challenge: %w", err)
		}
		if !bytes.Equal(resp, answerChallenge(nonce)) {
			return attestor.NodeResult{}, fmt.Errorf("%w: wrong challenge response", attestor.ErrAttestationFailed)
		}
	}
	id, err := agentid.New(td, challengeType, spec.NodeID)
	if err != nil {
		return attestor.NodeResult{}, err
	}
	sels := make([]selector.Selector, 0, len(spec.Selectors))
	for _, s := range spec.Selectors {
		sels = append(sels, selector.Must(s))
	}
	return attestor.NodeResult{AgentID: id, Selectors: sels, CanReattest: true, TrustOnFirstUse: spec.TOFU}, nil
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
