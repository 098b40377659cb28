package agentsvid

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nhid/nhid/pkg/agent/keys"
	"github.com/nhid/nhid/pkg/agent/trust"
	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// maxChallenges bounds the challenge rounds the agent answers, so a
// confused or hostile server cannot keep it busy.
const maxChallenges = 10

// KeyType is the type of the agent's own key.
const KeyType = keys.ECP256

// Result is what an attestation or renewal yields, checked.
type Result struct {
	SVID *x509svid.SVID
	// Bundle and BundleProto are the trust bundle that came with the SVID;
	// nil if a renewal carried none.
	Bundle      *spiffebundle.Bundle
	BundleProto *typesv1.Bundle
	// Selectors are the node selectors the server found (attestation only).
	Selectors []string
}

// Attest proves the node's identity with ev over client, whose connection
// must not need an agent SVID, and returns the agent SVID with the bundle.
// Server refusals keep their gRPC status.
func Attest(ctx context.Context, client agentv1.AgentServiceClient, td spiffeid.TrustDomain, ev attestor.NodeEvidence) (*Result, error) {
	key, csr, err := newKey()
	if err != nil {
		return nil, err
	}
	payload, err := ev.Evidence(ctx)
	if err != nil {
		return nil, fmt.Errorf("node attestor %s: evidence: %w", ev.Type(), err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Attest(ctx)
	if err != nil {
		return nil, fmt.Errorf("open attest stream: %w", err)
	}
	first := &agentv1.AttestRequest{Step: &agentv1.AttestRequest_Params{Params: &agentv1.AttestParams{
		Attestor: ev.Type(), Payload: payload, Csr: csr,
	}}}
	if err := stream.Send(first); err != nil {
		return nil, fmt.Errorf("send attestation params: %w", recvErr(stream, err))
	}
	for round := 0; ; round++ {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("server ended the attestation without a result")
			}
			return nil, fmt.Errorf("attest: %w", err)
		}
		switch step := resp.GetStep().(type) {
		case *agentv1.AttestResponse_Result:
			_ = stream.CloseSend()
			return checkAttestResult(td, step.Result, key)
		case *agentv1.AttestResponse_Challenge:
			if round >= maxChallenges {
				return nil, fmt.Errorf("attest: server sent more than %d challenges", maxChallenges)
			}
			answer, err := ev.Respond(ctx, step.Challenge)
			if err != nil {
				return nil, fmt.Errorf("node attestor %s: answer challenge: %w", ev.Type(), err)
			}
			msg := &agentv1.AttestRequest{Step: &agentv1.AttestRequest_ChallengeResponse{ChallengeResponse: answer}}
			if err := stream.Send(msg); err != nil {
				return nil, fmt.Errorf("send challenge response: %w", recvErr(stream, err))
			}
		default:
			return nil, errors.New("attest: server sent a message with neither a challenge nor a result")
		}
	}
}

// recvErr returns the stream's real status when Send failed because the
// server had already ended the call: Send then reports only io.EOF.
func recvErr(stream agentv1.AgentService_AttestClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return err
}

// Renew exchanges a new key's CSR for a new agent SVID, over a connection
// authenticated with the current one.
func Renew(ctx context.Context, client agentv1.AgentServiceClient, td spiffeid.TrustDomain, current spiffeid.ID) (*Result, error) {
	key, csr, err := newKey()
	if err != nil {
		return nil, err
	}
	resp, err := client.Renew(ctx, &agentv1.RenewRequest{Csr: csr})
	if err != nil {
		return nil, fmt.Errorf("renew agent SVID: %w", err)
	}
	res, err := checkChain(td, resp.GetSvidChain(), resp.GetBundle(), key)
	if err != nil {
		return nil, fmt.Errorf("renew agent SVID: %w", err)
	}
	if res.SVID.ID != current {
		return nil, fmt.Errorf("renew agent SVID: svid_chain[0]: SPIFFE ID %s, want %s", res.SVID.ID, current)
	}
	return res, nil
}

func newKey() (crypto.Signer, []byte, error) {
	key, err := keys.Generate(KeyType)
	if err != nil {
		return nil, nil, fmt.Errorf("agent key: %w", err)
	}
	csr, err := keys.CSR(key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent key: %w", err)
	}
	return key, csr, nil
}

func checkAttestResult(td spiffeid.TrustDomain, res *agentv1.AttestResult, key crypto.Signer) (*Result, error) {
	if res.GetBundle() == nil {
		return nil, errors.New("attest result: bundle: missing")
	}
	out, err := checkChain(td, res.GetSvidChain(), res.GetBundle(), key)
	if err != nil {
		return nil, fmt.Errorf("attest result: %w", err)
	}
	if got := out.SVID.ID.String(); res.GetSpiffeId() != "" && got != res.GetSpiffeId() {
		return nil, fmt.Errorf("attest result: spiffe_id %s differs from the SVID's %s", res.GetSpiffeId(), got)
	}
	out.Selectors = slices.Clone(res.GetSelectors())
	return out, nil
}

// checkChain checks an agent SVID chain for key: a valid X.509-SVID for an
// agent ID of td that chains to the bundle (the one sent with it, or the
// one already trusted when none was sent).
func checkChain(td spiffeid.TrustDomain, chain [][]byte, bundle *typesv1.Bundle, key crypto.Signer) (*Result, error) {
	if len(chain) == 0 {
		return nil, errors.New("svid_chain: empty")
	}
	keyDER, err := keys.MarshalPKCS8(key)
	if err != nil {
		return nil, err
	}
	s, err := x509svid.ParseRaw(slices.Concat(chain...), keyDER)
	if err != nil {
		return nil, fmt.Errorf("svid_chain: %w", err)
	}
	if s.ID.TrustDomain() != td || !agentid.IsAgent(s.ID) {
		return nil, fmt.Errorf("svid_chain[0]: %s is not an agent ID of %s", s.ID, td.Name())
	}
	out := &Result{SVID: s}
	if bundle == nil {
		return out, nil
	}
	if out.Bundle, err = trust.FromProto(td, bundle); err != nil {
		return nil, err
	}
	if _, _, err := x509svid.Verify(s.Certificates, out.Bundle.X509Bundle()); err != nil {
		return nil, fmt.Errorf("svid_chain: does not chain to the bundle sent with it: %w", err)
	}
	out.BundleProto = bundle
	return out, nil
}
