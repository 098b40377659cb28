package agentapi

import (
	"context"
	"crypto/x509"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/svid"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Renew signs a new agent SVID for the calling node. The SVID it replaces
// stays valid until the new one is first used (see touch), so an agent can
// switch connections without a gap.
//
// Every renewal, refused or not, makes one svid.mint audit record.
func (s *Service) Renew(ctx context.Context, req *agentv1.RenewRequest) (*agentv1.RenewResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	resp, leaf, err := s.renew(ctx, c, req)
	s.recordRenew(ctx, c, leaf, err)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *Service) renew(ctx context.Context, c *caller, req *agentv1.RenewRequest) (*agentv1.RenewResponse, *x509.Certificate, error) {
	if err := s.refuseUntrusted(ctx, c.node, "agent SVID renewal"); err != nil {
		return nil, nil, err
	}
	csr, err := svid.CheckCSR(req.GetCsr())
	if err != nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	chain, err := s.ca.SignX509SVID(ctx, ca.X509Params{ID: c.id, PublicKey: csr.PublicKey, TTL: s.cfg.AgentSVIDTTL})
	if err != nil {
		return nil, nil, s.internal(ctx, "sign agent SVID", err)
	}
	leaf := chain[0]
	if err := s.recordAgentSVID(ctx, c.id.String(), leaf, s.clock.Now()); err != nil {
		return nil, nil, err
	}
	newSerial := serialHex(leaf)
	_, err = s.store.UpdateNode(ctx, c.id.String(), func(n *typesv1.Node) error {
		// The node may have been evicted since the call was authenticated.
		if err := checkNode(n, c.serial); err != nil {
			return err
		}
		if err := s.checkTrusted(n); err != nil {
			return err
		}
		n.PreviousSvidSerial = n.GetSvidSerial()
		n.SvidSerial = newSerial
		n.SvidExpiresAt = leaf.NotAfter.Unix()
		return nil
	})
	switch {
	case status.Code(err) == codes.PermissionDenied:
		return nil, nil, err
	case errors.Is(err, store.ErrNotFound):
		return nil, nil, status.Error(codes.PermissionDenied, msgUnknown)
	case err != nil:
		return nil, nil, s.internal(ctx, "update node", err)
	}
	bundle, _, err := s.bundles.Current(ctx)
	if err != nil {
		return nil, nil, s.internal(ctx, "read bundle", err)
	}
	telemetry.Logger(ctx, s.log).Info("agent SVID renewed", telemetry.Serial, newSerial,
		telemetry.ExpiresAt, leaf.NotAfter)
	return &agentv1.RenewResponse{SvidChain: rawChain(chain), Bundle: bundle}, leaf, nil
}
