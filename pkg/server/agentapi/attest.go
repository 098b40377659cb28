package agentapi

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/svid"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Bounds of one attestation, so an unauthenticated peer (or a confused
// attestor) cannot hold server resources for long.
const (
	maxAttestRounds   = 10
	maxAttestMessage  = 64 << 10
	maxAttestDuration = 60 * time.Second
	// maxConcurrentAttestations bounds attestations in progress; more are
	// refused with ResourceExhausted, which agents retry with backoff.
	maxConcurrentAttestations = 64
)

// attestation is one Attest call in progress.
type attestation struct {
	s      *Service
	stream agentv1.AgentService_AttestServer
	ctx    context.Context
	log    *slog.Logger
	typ    string
	rounds int
	// addr is the peer's address; nodeID, res and canReattest are what
	// the attestation established, for its audit record (records.go).
	addr        string
	nodeID      string
	res         *agentv1.AttestResult
	canReattest bool
	// challengeErr is the transport or protocol failure of a challenge
	// round; it is reported as is, whatever the verifier wrapped it in.
	challengeErr error
}

// Attest verifies a node's evidence and issues its agent SVID.
func (s *Service) Attest(stream agentv1.AgentService_AttestServer) error {
	select {
	case s.attestSlots <- struct{}{}:
		defer func() { <-s.attestSlots }()
	default:
		s.metrics.attestations.WithLabelValues("unknown", outcomeError).Inc()
		return status.Error(codes.ResourceExhausted, "too many attestations in progress; retry later")
	}
	ctx, cancel := context.WithTimeout(stream.Context(), s.attestTimeout)
	defer cancel()
	a := &attestation{s: s, stream: stream, ctx: ctx, log: telemetry.Logger(ctx, s.log)}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		a.addr = p.Addr.String()
		a.log = a.log.With(telemetry.Address, a.addr)
	}
	err := a.run()
	s.metrics.attestations.WithLabelValues(metricAttestor(s, a.typ), outcome(err)).Inc()
	s.recordAttest(stream.Context(), a, err)
	return err
}

func (a *attestation) run() error {
	first, err := a.recv()
	if err != nil {
		return err
	}
	params := first.GetParams()
	if params == nil {
		return status.Error(codes.InvalidArgument, "the first message must carry params")
	}
	// Set before it is checked, for the audit record (which quotes an
	// unknown type bounded) and the metric (which says "unknown").
	a.typ = params.GetAttestor()
	verifier, ok := a.s.verifiers[params.GetAttestor()]
	if params.GetAttestor() == "" || !ok {
		return status.Errorf(codes.InvalidArgument, "params.attestor: unknown attestor %q; known: %s",
			params.GetAttestor(), a.s.known)
	}
	a.log = a.log.With(telemetry.Attestor, a.typ)
	// The CSR is checked before the evidence, so a malformed request does
	// not burn single-use evidence such as a join token.
	csr, err := svid.CheckCSR(params.GetCsr())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "params.csr: %v", err)
	}
	result, err := verifier.Attest(a.ctx, params.GetPayload(), a.challenge)
	if err != nil {
		return a.verifyFailed(err)
	}
	if err := a.s.checkResult(result); err != nil {
		return a.s.internal(a.ctx, "node attestor result", fmt.Errorf("attestor %s: %w", a.typ, err))
	}
	a.nodeID, a.canReattest = result.AgentID.String(), result.CanReattest
	res, err := a.s.admitNode(a.ctx, a.log, a.typ, result, csr)
	if err != nil {
		return err
	}
	if err := a.stream.Send(&agentv1.AttestResponse{Step: &agentv1.AttestResponse_Result{Result: res}}); err != nil {
		return err
	}
	a.res = res
	a.log.Info("node attested", telemetry.SPIFFEID, res.GetSpiffeId(),
		telemetry.Selectors, res.GetSelectors(), "can_reattest", result.CanReattest)
	return nil
}

// recv reads the next message, bounded by the attestation's deadline and
// message size limit. Recv itself cannot be interrupted, so it runs aside;
// once the handler returns, gRPC ends the stream and the read with it.
func (a *attestation) recv() (*agentv1.AttestRequest, error) {
	type result struct {
		msg *agentv1.AttestRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		msg, err := a.stream.Recv()
		ch <- result{msg, err}
	}()
	select {
	case <-a.ctx.Done():
		return nil, attestCtxError(a.ctx)
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if size := proto.Size(r.msg); size > maxAttestMessage {
			return nil, status.Errorf(codes.InvalidArgument, "attest message of %d bytes exceeds %d", size, maxAttestMessage)
		}
		return r.msg, nil
	}
}

func attestCtxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return status.Errorf(codes.DeadlineExceeded, "attestation did not finish within %v", maxAttestDuration)
	}
	return status.FromContextError(ctx.Err()).Err()
}

// challenge is the attestor.Challenger of this attestation.
func (a *attestation) challenge(ctx context.Context, challenge []byte) ([]byte, error) {
	resp, err := a.challengeRound(ctx, challenge)
	if err != nil && a.challengeErr == nil {
		a.challengeErr = err
	}
	return resp, err
}

func (a *attestation) challengeRound(ctx context.Context, challenge []byte) ([]byte, error) {
	if a.challengeErr != nil {
		return nil, a.challengeErr
	}
	if a.rounds >= maxAttestRounds {
		return nil, status.Errorf(codes.PermissionDenied, "attestation failed: more than %d challenge rounds", maxAttestRounds)
	}
	if len(challenge) > maxAttestMessage-64 {
		return nil, status.Errorf(codes.Internal, "attestor challenge of %d bytes is too large", len(challenge))
	}
	if err := ctx.Err(); err != nil {
		return nil, attestCtxError(ctx)
	}
	a.rounds++
	msg := &agentv1.AttestResponse{Step: &agentv1.AttestResponse_Challenge{Challenge: challenge}}
	if err := a.stream.Send(msg); err != nil {
		return nil, err
	}
	req, err := a.recv()
	if err != nil {
		return nil, err
	}
	step, ok := req.GetStep().(*agentv1.AttestRequest_ChallengeResponse)
	if !ok {
		return nil, status.Error(codes.InvalidArgument, "expected a challenge_response")
	}
	return step.ChallengeResponse, nil
}

// verifyFailed turns a verifier error into the agent's status, logging
// refusals at audit grade: who tried which attestor and why it failed.
func (a *attestation) verifyFailed(err error) error {
	if a.challengeErr != nil {
		if status.Code(a.challengeErr) == codes.PermissionDenied {
			a.log.Warn("node attestation refused", telemetry.Reason, status.Convert(a.challengeErr).Message())
		}
		return a.challengeErr
	}
	if errors.Is(err, attestor.ErrAttestationFailed) {
		reason := strings.TrimPrefix(err.Error(), attestor.ErrAttestationFailed.Error()+": ")
		a.log.Warn("node attestation refused", telemetry.Reason, reason)
		return status.Error(codes.PermissionDenied, "attestation failed: "+reason)
	}
	if a.ctx.Err() != nil {
		return attestCtxError(a.ctx)
	}
	return a.s.internal(a.ctx, "node attestation", err)
}

// checkResult guards against an attestor handing out IDs outside the agent
// namespace of this trust domain.
func (s *Service) checkResult(r attestor.NodeResult) error {
	if r.AgentID.IsZero() {
		return errors.New("empty agent ID")
	}
	if r.AgentID.TrustDomain() != s.td || !agentid.IsAgent(r.AgentID) {
		return fmt.Errorf("agent ID %s is not in the agent namespace of %s", r.AgentID, s.td.Name())
	}
	for _, sel := range r.Selectors {
		if sel.IsZero() {
			return errors.New("empty node selector")
		}
	}
	return nil
}

// admitNode signs the agent SVID and records the node as ACTIVE.
func (s *Service) admitNode(ctx context.Context, log *slog.Logger, typ string, r attestor.NodeResult, csr *x509.CertificateRequest) (*agentv1.AttestResult, error) {
	id := r.AgentID.String()
	existing, err := s.store.GetNode(ctx, id)
	switch {
	case err == nil && existing.GetStatus() == typesv1.NodeStatus_NODE_STATUS_BANNED:
		log.Warn("node attestation refused", telemetry.SPIFFEID, id, telemetry.Reason, msgBanned)
		return nil, status.Error(codes.PermissionDenied, msgBanned)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, s.internal(ctx, "load node", err)
	case err == nil && r.TrustOnFirstUse && existing.GetStatus() != typesv1.NodeStatus_NODE_STATUS_EVICTED:
		log.Warn("node attestation refused", telemetry.SPIFFEID, id, telemetry.Reason, msgAttestedOnce)
		return nil, status.Error(codes.PermissionDenied, msgAttestedOnce)
	}
	chain, err := s.ca.SignX509SVID(ctx, ca.X509Params{ID: r.AgentID, PublicKey: csr.PublicKey, TTL: s.cfg.AgentSVIDTTL})
	if err != nil {
		return nil, s.internal(ctx, "sign agent SVID", err)
	}
	leaf := chain[0]
	now := s.clock.Now()
	if err := s.recordAgentSVID(ctx, id, leaf, now); err != nil {
		return nil, err
	}
	sels := selector.NewSet(r.Selectors...).Strings()
	node := &typesv1.Node{
		SpiffeId:      id,
		AttestorType:  typ,
		Selectors:     sels,
		Status:        typesv1.NodeStatus_NODE_STATUS_ACTIVE,
		SvidSerial:    serialHex(leaf),
		SvidExpiresAt: leaf.NotAfter.Unix(),
		AttestedAt:    now.Unix(),
		LastSeenAt:    now.Unix(),
		// A passing attestation makes an UNTRUSTED node ACTIVE again and
		// restarts its continuous attestation from this evidence.
		AttestorState: r.State,
		VerifiedAt:    now.Unix(),
	}
	if err := s.upsertNode(ctx, node, r.TrustOnFirstUse); err != nil {
		if status.Code(err) == codes.PermissionDenied {
			log.Warn("node attestation refused", telemetry.SPIFFEID, id, telemetry.Reason, status.Convert(err).Message())
		}
		return nil, err
	}
	bundle, _, err := s.bundles.Current(ctx)
	if err != nil {
		return nil, s.internal(ctx, "read bundle", err)
	}
	return &agentv1.AttestResult{SvidChain: rawChain(chain), Bundle: bundle, SpiffeId: id, Selectors: sels}, nil
}

// upsertNode creates the node or replaces an existing record, unless an
// operator banned it in the meantime or, for trust-on-first-use evidence,
// another attestation admitted it first.
func (s *Service) upsertNode(ctx context.Context, node *typesv1.Node, tofu bool) error {
	_, err := s.store.CreateNode(ctx, node)
	if err == nil {
		return nil
	}
	if !errors.Is(err, store.ErrAlreadyExists) {
		return s.internal(ctx, "create node", err)
	}
	_, err = s.store.UpdateNode(ctx, node.GetSpiffeId(), func(n *typesv1.Node) error {
		if n.GetStatus() == typesv1.NodeStatus_NODE_STATUS_BANNED {
			return status.Error(codes.PermissionDenied, msgBanned)
		}
		if tofu && n.GetStatus() != typesv1.NodeStatus_NODE_STATUS_EVICTED {
			return status.Error(codes.PermissionDenied, msgAttestedOnce)
		}
		rev := n.GetRevision()
		proto.Reset(n)
		proto.Merge(n, node)
		n.Revision = rev
		return nil
	})
	switch {
	case status.Code(err) == codes.PermissionDenied:
		return err
	case err != nil:
		return s.internal(ctx, "update node", err)
	}
	return nil
}

// recordAgentSVID writes the ledger row of an agent SVID. It is written
// before the node record points at the SVID, so a failure in between
// leaves only a harmless row.
func (s *Service) recordAgentSVID(ctx context.Context, id string, leaf *x509.Certificate, now time.Time) error {
	row := &typesv1.IssuedSVID{
		Id:        serialHex(leaf),
		Kind:      typesv1.SVIDKind_SVID_KIND_AGENT_X509,
		SpiffeId:  id,
		Node:      id,
		IssuedAt:  now.Unix(),
		ExpiresAt: leaf.NotAfter.Unix(),
	}
	if err := s.store.RecordIssued(ctx, []*typesv1.IssuedSVID{row}); err != nil {
		return s.internal(ctx, "record agent SVID", err)
	}
	s.metrics.issued.WithLabelValues("agent_x509").Inc()
	return nil
}

func rawChain(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}

// metricAttestor keeps the attestor label to known types, so hostile input
// cannot grow the metric's cardinality.
func metricAttestor(s *Service, typ string) string {
	if _, ok := s.verifiers[typ]; ok {
		return typ
	}
	return "unknown"
}

func outcome(err error) string {
	switch status.Code(err) {
	case codes.OK:
		return outcomeSuccess
	case codes.PermissionDenied:
		if status.Convert(err).Message() == msgBanned {
			return outcomeBanned
		}
		return outcomeRefused
	case codes.InvalidArgument:
		return outcomeInvalid
	default:
		return outcomeError
	}
}
