package adminapi

import (
	"context"
	"errors"
	"math/big"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/store"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Ledger reads the SVID ledger; pkg/store/bolt's *Store satisfies it.
type Ledger interface {
	GetIssued(ctx context.Context, id string) (*typesv1.IssuedSVID, error)
}

type svidService struct {
	adminv1.UnimplementedSVIDServiceServer
	s *Service
}

// GetIssuedSVID answers what an SVID was issued for: the ledger row of an
// X.509-SVID serial (lowercase hex without leading zeros, as nhid records
// it; a serial with colons, capitals or leading zeros, as openssl prints
// it, is found too) or of a JWT-SVID jti.
func (h *svidService) GetIssuedSVID(ctx context.Context, req *adminv1.GetIssuedSVIDRequest) (*adminv1.GetIssuedSVIDResponse, error) {
	id := req.GetId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "id: required")
	case len(id) > maxLedgerIDBytes:
		return nil, status.Errorf(codes.InvalidArgument, "id: is %d bytes, at most %d allowed", len(id), maxLedgerIDBytes)
	}
	row, err := h.s.ledger.GetIssued(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		// A serial as openssl prints it ("0A:1B:...") or with leading
		// zeros; a jti is looked up only as given.
		if serial, ok := normalSerial(id); ok && serial != id {
			row, err = h.s.ledger.GetIssued(ctx, serial)
		}
	}
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	return &adminv1.GetIssuedSVIDResponse{Svid: row}, nil
}

// normalSerial spells a hex serial as nhid records it: lowercase, without
// colons or leading zeros.
func normalSerial(id string) (string, bool) {
	n, ok := new(big.Int).SetString(strings.ReplaceAll(id, ":", ""), 16)
	if !ok || n.Sign() < 0 {
		return "", false
	}
	return n.Text(16), true
}
