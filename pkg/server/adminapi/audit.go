package adminapi

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Bounds of the audit service.
const (
	// A stream message carries at most auditPage records or about
	// auditPageBytes, far below gRPC's default 4 MiB message limit.
	auditPage      = 500
	auditPageBytes = 1 << 20
	// maxAuditTail bounds tail, which is held in memory.
	maxAuditTail = 100_000
	// maxCheckpointPage is the most checkpoints one call returns; 0 asks
	// for that many.
	maxCheckpointPage = 1000
)

// AuditLog is what the audit service reads; *auditlog.Log satisfies it.
type AuditLog interface {
	ListAudit(ctx context.Context, req store.ListAuditRequest) ([]*typesv1.AuditRecord, error)
	ListAuditCheckpoints(ctx context.Context, fromSeq uint64, limit int) ([]*typesv1.AuditCheckpoint, error)
	// AuditHead is the chain's head, as far as this server knows it.
	AuditHead(ctx context.Context) (store.AuditHead, error)
	// TrustedKeys are the PKIX public keys of this server's checkpoint key.
	TrustedKeys() [][]byte
}

type auditService struct {
	adminv1.UnimplementedAuditServiceServer
	s *Service
}

// checkAuditRequest validates a ListAuditRecords request, naming every
// bad field.
func checkAuditRequest(req *adminv1.ListAuditRecordsRequest) error {
	var errs []error
	if req.GetSince() < 0 {
		errs = append(errs, fmt.Errorf("since: %d is negative", req.GetSince()))
	}
	if req.GetUntil() < 0 {
		errs = append(errs, fmt.Errorf("until: %d is negative", req.GetUntil()))
	}
	if req.GetUntil() != 0 && req.GetUntil() < req.GetSince() {
		errs = append(errs, fmt.Errorf("until: %d is before since %d", req.GetUntil(), req.GetSince()))
	}
	if req.GetLimit() < 0 {
		errs = append(errs, fmt.Errorf("limit: %d is negative", req.GetLimit()))
	}
	if req.GetTail() < 0 || req.GetTail() > maxAuditTail {
		errs = append(errs, fmt.Errorf("tail: %d is outside 0 to %d", req.GetTail(), maxAuditTail))
	}
	return errors.Join(errs...)
}

// ListAuditRecords streams the records the request selects, in seq order,
// in pages of auditPage.
func (h *auditService) ListAuditRecords(req *adminv1.ListAuditRecordsRequest, stream grpc.ServerStreamingServer[adminv1.ListAuditRecordsResponse]) error {
	if err := checkAuditRequest(req); err != nil {
		return invalidArgument(err)
	}
	ctx := stream.Context()
	var sendErr error
	send := func(recs []*typesv1.AuditRecord) error {
		sendErr = sendAuditPages(stream, recs)
		return sendErr
	}
	var err error
	if req.GetTail() > 0 {
		var recs []*typesv1.AuditRecord
		if recs, err = h.tail(ctx, req); err == nil {
			err = send(recs)
		}
	} else {
		err = h.pages(ctx, req, send)
	}
	switch {
	case sendErr != nil:
		return sendErr
	case err != nil:
		return h.s.storeError(ctx, err)
	}
	return nil
}

// sendAuditPages sends recs in messages of at most auditPage records or
// about auditPageBytes.
func sendAuditPages(stream grpc.ServerStreamingServer[adminv1.ListAuditRecordsResponse], recs []*typesv1.AuditRecord) error {
	start, size := 0, 0
	for i, r := range recs {
		size += proto.Size(r)
		if i+1-start == auditPage || size >= auditPageBytes || i == len(recs)-1 {
			if err := stream.Send(&adminv1.ListAuditRecordsResponse{Records: recs[start : i+1]}); err != nil {
				return err
			}
			start, size = i+1, 0
		}
	}
	return nil
}

// pages reads the selected records page by page and hands each to fn. It
// moves on from the highest seq of a page, and stops when that does not
// move (a store whose records' seqs were tampered with cannot make it loop).
func (h *auditService) pages(ctx context.Context, req *adminv1.ListAuditRecordsRequest, fn func([]*typesv1.AuditRecord) error) error {
	from, left := max(req.GetFromSeq(), 1), req.GetLimit()
	for {
		n := int64(auditPage)
		if req.GetLimit() > 0 {
			n = min(n, left)
		}
		recs, err := h.s.auditLog.ListAudit(ctx, store.ListAuditRequest{FromSeq: from, Since: req.GetSince(), Until: req.GetUntil(), Limit: int(n)})
		if err != nil || len(recs) == 0 {
			return err
		}
		if err := fn(recs); err != nil {
			return err
		}
		left -= int64(len(recs))
		next := from
		for _, r := range recs {
			next = max(next, r.GetSeq()+1)
		}
		if next <= from || int64(len(recs)) < n || req.GetLimit() > 0 && left <= 0 {
			return nil
		}
		from = next
	}
}

// tail returns the newest req.Tail records of the selection.
func (h *auditService) tail(ctx context.Context, req *adminv1.ListAuditRecordsRequest) ([]*typesv1.AuditRecord, error) {
	if req.GetSince() == 0 && req.GetUntil() == 0 && req.GetLimit() == 0 {
		// Without filters the tail starts tail seqs before the head.
		head, err := h.s.auditLog.AuditHead(ctx)
		if err != nil {
			return nil, err
		}
		from := uint64(1)
		if head.Seq > uint64(req.GetTail()) {
			from = head.Seq - uint64(req.GetTail()) + 1
		}
		r := &adminv1.ListAuditRecordsRequest{FromSeq: max(from, req.GetFromSeq())}
		var out []*typesv1.AuditRecord
		err = h.pages(ctx, r, func(recs []*typesv1.AuditRecord) error { out = append(out, recs...); return nil })
		return lastN(out, int(req.GetTail())), err
	}
	var ring []*typesv1.AuditRecord
	err := h.pages(ctx, req, func(recs []*typesv1.AuditRecord) error {
		ring = lastN(append(ring, recs...), int(req.GetTail()))
		return nil
	})
	return ring, err
}

// lastN is the last n elements of s, copied when it had more.
func lastN(s []*typesv1.AuditRecord, n int) []*typesv1.AuditRecord {
	if len(s) <= n {
		return s
	}
	return append([]*typesv1.AuditRecord(nil), s[len(s)-n:]...)
}

// ListAuditCheckpoints returns checkpoints from from_seq on, in seq order,
// at most limit (0 or up to 1000; 0 means 1000). Callers page with
// from_seq = last seq.
func (h *auditService) ListAuditCheckpoints(ctx context.Context, req *adminv1.ListAuditCheckpointsRequest) (*adminv1.ListAuditCheckpointsResponse, error) {
	limit := int(req.GetLimit())
	switch {
	case limit < 0 || limit > maxCheckpointPage:
		return nil, invalidArgument(fmt.Errorf("limit: %d is outside 0 to %d", limit, maxCheckpointPage))
	case limit == 0:
		limit = maxCheckpointPage
	}
	cps, err := h.s.auditLog.ListAuditCheckpoints(ctx, req.GetFromSeq(), limit)
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	return &adminv1.ListAuditCheckpointsResponse{Checkpoints: cps}, nil
}

// GetAuditHead returns the chain's head and this server's checkpoint key,
// as it holds them in memory.
func (h *auditService) GetAuditHead(ctx context.Context, _ *adminv1.GetAuditHeadRequest) (*adminv1.GetAuditHeadResponse, error) {
	head, err := h.s.auditLog.AuditHead(ctx)
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	return &adminv1.GetAuditHeadResponse{Seq: head.Seq, Hash: head.Hash, TrustedKeys: h.s.auditLog.TrustedKeys()}, nil
}
