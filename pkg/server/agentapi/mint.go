package agentapi

import (
	"context"
	"errors"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/svid"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// MintX509SVIDs signs a batch of workload X.509-SVIDs. Each item fails or
// succeeds on its own (its code says which); the SPIFFE ID and DNS names
// always come from the entry, never from the CSR.
// Every call, refused or not, makes one svid.mint audit record.
func (s *Service) MintX509SVIDs(ctx context.Context, req *agentv1.MintX509SVIDsRequest) (*agentv1.MintX509SVIDsResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	resp, rows, err := s.mintX509Batch(ctx, c, req)
	s.recordX509Mint(ctx, c, req, resp, rows, err)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// mintX509Batch signs the batch and writes its ledger rows; on error resp
// may hold the per-item results so far, but nothing was issued.
func (s *Service) mintX509Batch(ctx context.Context, c *caller, req *agentv1.MintX509SVIDsRequest) (*agentv1.MintX509SVIDsResponse, []*typesv1.IssuedSVID, error) {
	if err := s.refuseUntrusted(ctx, c.node, "X.509-SVID minting"); err != nil {
		return nil, nil, err
	}
	switch n := len(req.GetParams()); {
	case n == 0:
		return nil, nil, status.Error(codes.InvalidArgument, "params: at least one item is required")
	case n > MaxMintBatch:
		return nil, nil, status.Errorf(codes.InvalidArgument, "params: %d items, at most %d allowed", n, MaxMintBatch)
	}
	az, _, err := s.loadAuthz(ctx, c.node)
	if err != nil {
		return nil, nil, s.internal(ctx, "load node aliases", err)
	}
	now := s.clock.Now()
	resp := &agentv1.MintX509SVIDsResponse{Results: make([]*agentv1.X509SVIDResult, len(req.GetParams()))}
	var rows []*typesv1.IssuedSVID
	for i, p := range req.GetParams() {
		res, row := s.mintX509(ctx, c, az, p, now)
		resp.Results[i] = res
		if row != nil {
			rows = append(rows, row)
		}
	}
	if len(rows) > 0 {
		// No SVID leaves the server without its ledger row.
		if err := s.store.RecordIssued(ctx, rows); err != nil {
			return resp, rows, s.internal(ctx, "record issued SVIDs", err)
		}
		s.metrics.issued.WithLabelValues("x509").Add(float64(len(rows)))
	}
	return resp, rows, nil
}

// mintX509 handles one item: its result, and the ledger row when signed.
func (s *Service) mintX509(ctx context.Context, c *caller, az *authz, p *agentv1.X509SVIDParams, now time.Time) (*agentv1.X509SVIDResult, *typesv1.IssuedSVID) {
	res := &agentv1.X509SVIDResult{EntryId: p.GetEntryId()}
	fail := func(code codes.Code, msg string) (*agentv1.X509SVIDResult, *typesv1.IssuedSVID) {
		res.Code, res.Message = int32(code), msg
		return res, nil
	}
	e, id, st := s.authorisedEntry(ctx, az, p.GetEntryId(), now)
	if st != nil {
		return fail(st.Code(), st.Message())
	}
	csr, err := svid.CheckCSR(p.GetCsr())
	if err != nil {
		return fail(codes.InvalidArgument, "csr: "+err.Error())
	}
	ttl := s.cfg.DefaultX509TTL
	if e.GetX509Ttl() > 0 {
		ttl = time.Duration(e.GetX509Ttl()) * time.Second
	}
	chain, err := s.ca.SignX509SVID(ctx, ca.X509Params{
		ID: id, PublicKey: csr.PublicKey, TTL: ttl, DNSNames: e.GetDnsNames(),
		Purpose: &svid.Purpose{EntryID: e.GetId(), Purpose: e.GetPurpose(), Owner: e.GetOwner()},
	})
	if err != nil {
		st := status.Convert(s.internal(ctx, "sign X.509-SVID", err))
		return fail(st.Code(), st.Message())
	}
	leaf := chain[0]
	res.SvidChain, res.ExpiresAt = rawChain(chain), leaf.NotAfter.Unix()
	return res, ledgerRow(typesv1.SVIDKind_SVID_KIND_X509, serialHex(leaf), e, c, now, leaf.NotAfter)
}

// authorisedEntry loads an entry the caller may mint for, or the status
// saying why it may not.
func (s *Service) authorisedEntry(ctx context.Context, az *authz, entryID string, now time.Time) (*typesv1.Entry, spiffeid.ID, *status.Status) {
	if entryID == "" {
		return nil, spiffeid.ID{}, status.New(codes.InvalidArgument, "entry_id: required")
	}
	e, err := s.store.GetEntry(ctx, entryID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, spiffeid.ID{}, status.New(codes.NotFound, entryMsg(entryID, "not found"))
	case err != nil:
		return nil, spiffeid.ID{}, status.Convert(s.internal(ctx, "load entry", err))
	}
	if reason := az.denyReason(e, now); reason != "" {
		return nil, spiffeid.ID{}, status.New(codes.PermissionDenied, entryMsg(entryID, reason))
	}
	id, err := spiffeid.FromString(e.GetSpiffeId())
	if err != nil {
		return nil, spiffeid.ID{}, status.Convert(s.internal(ctx, "stored entry SPIFFE ID", err))
	}
	return e, id, nil
}

func ledgerRow(kind typesv1.SVIDKind, id string, e *typesv1.Entry, c *caller, issued, expires time.Time) *typesv1.IssuedSVID {
	return &typesv1.IssuedSVID{
		Id:        id,
		Kind:      kind,
		SpiffeId:  e.GetSpiffeId(),
		EntryId:   e.GetId(),
		Node:      c.id.String(),
		Purpose:   e.GetPurpose(),
		Owner:     e.GetOwner(),
		IssuedAt:  issued.Unix(),
		ExpiresAt: expires.Unix(),
	}
}
