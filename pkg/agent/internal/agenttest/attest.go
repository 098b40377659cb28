package agenttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// AttestorType is the node attestor the fake server accepts.
const AttestorType = "test_challenge"

// NodeAttestation configures the fake server's Attest and Renew: evidence
// Payload, answered Challenges times with sha256(challenge), gives AgentID.
type NodeAttestation struct {
	Payload    []byte
	Challenges int
	AgentID    spiffeid.ID
}

// SetNodeAttestation configures Attest and Renew.
func (s *Server) SetNodeAttestation(na NodeAttestation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.node = na
}

func (s *Server) nodeAttestation() NodeAttestation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node
}

// Attest implements agentv1.AgentServiceServer.
func (s *Server) Attest(stream agentv1.AgentService_AttestServer) error {
	na := s.nodeAttestation()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	params := first.GetParams()
	if params.GetAttestor() != AttestorType || !bytes.Equal(params.GetPayload(), na.Payload) {
		return status.Error(codes.PermissionDenied, "attestation failed: wrong evidence")
	}
	for range na.Challenges {
		nonce := make([]byte, 16)
		_, _ = rand.Read(nonce)
		if err := stream.Send(&agentv1.AttestResponse{Step: &agentv1.AttestResponse_Challenge{Challenge: nonce}}); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		want := sha256.Sum256(nonce)
		if !bytes.Equal(resp.GetChallengeResponse(), want[:]) {
			return status.Error(codes.PermissionDenied, "attestation failed: wrong challenge response")
		}
	}
	chain, err := s.CA.SignCSR(params.GetCsr(), na.AgentID, s.X509TTL)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return stream.Send(&agentv1.AttestResponse{Step: &agentv1.AttestResponse_Result{Result: &agentv1.AttestResult{
		SvidChain: chain, Bundle: s.CA.Bundle(), SpiffeId: na.AgentID.String(), Selectors: []string{"test:node"},
	}}})
}

// Renew implements agentv1.AgentServiceServer.
func (s *Server) Renew(_ context.Context, req *agentv1.RenewRequest) (*agentv1.RenewResponse, error) {
	na := s.nodeAttestation()
	chain, err := s.CA.SignCSR(req.GetCsr(), na.AgentID, s.X509TTL)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &agentv1.RenewResponse{SvidChain: chain, Bundle: s.CA.Bundle()}, nil
}

// Evidence is the agent half of the fake server's attestor.
type Evidence struct {
	Payload []byte
}

// Type returns AttestorType.
func (e Evidence) Type() string { return AttestorType }

// Evidence returns the payload.
func (e Evidence) Evidence(context.Context) ([]byte, error) { return e.Payload, nil }

// Respond answers a challenge with its SHA-256.
func (e Evidence) Respond(_ context.Context, challenge []byte) ([]byte, error) {
	sum := sha256.Sum256(challenge)
	return sum[:], nil
}
