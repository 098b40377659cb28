package tpm

import (
	"context"
	"fmt"

	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Reattest quotes a node again (continuous attestation): a fresh nonce,
// the configured PCRs, and the AK that was bound to the node's EK at
// attestation. The EK's trust is checked again against today's
// configuration (an EK CA or allow-list entry removed since makes the node
// untrusted), and the values against the golden sets, or, without any, the
// values the node attested with.
func (v *Verifier) Reattest(ctx context.Context, node attestor.ReattestNode, challenge attestor.Challenger) (attestor.NodeResult, error) {
	if err := ctx.Err(); err != nil {
		return attestor.NodeResult{}, fmt.Errorf("tpm reattestation: %w", err)
	}
	log := v.log.With(telemetry.NodeID, node.AgentID.String())
	st, err := decodeState(node.State)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errState, err)
	}
	ek, err := checkEK(st.EKPublic)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errState, fmt.Errorf("ek_public: %w", err))
	}
	log = log.With(telemetry.EKPubHash, ek.hash)
	id, err := v.trust.trust(ek, st.EKCert, v.clock.Now())
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errEKUntrusted, err)
	}
	ak, err := checkAK(st.AKPublic)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errState, fmt.Errorf("ak_public: %w", err))
	}
	nonce := random(nonceSize)
	r, err := v.ask(ctx, log, challenge, challengeFor(nonce, v.policy.selection, ak))
	if err != nil {
		return attestor.NodeResult{}, err
	}
	if len(r.Secret) != 0 {
		return attestor.NodeResult{}, v.refuse(log, errResponse, fmt.Errorf("secret: sent although no credential was asked for"))
	}
	values, err := verifyQuote(ak, nonce, v.policy.selection, r)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errQuote, err)
	}
	matched, err := v.policy.evaluate(values, st.pinned())
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, errPCRPolicy, err)
	}
	res, err := v.result(id, ak, values, matched)
	if err != nil {
		return attestor.NodeResult{}, err
	}
	if res.AgentID != node.AgentID {
		return attestor.NodeResult{}, v.refuse(log, errState, fmt.Errorf("the stored EK gives %s, not the node's %s", res.AgentID, node.AgentID))
	}
	// The pinned values stay those of the attestation: without golden sets
	// the node is held to them for as long as it keeps its identity.
	if len(v.policy.golden) == 0 {
		res.State = node.State
	}
	return res, nil
}
