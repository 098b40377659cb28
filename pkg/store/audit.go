package store

import (
	"context"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// AuditHead is the newest record of the audit chain: its seq and hash. The
// head of an empty log is seq 0 with a nil hash.
type AuditHead struct {
	Seq  uint64
	Hash []byte
}

// AuditAppend is what one AppendAudit transaction adds: records chained on
// the head it was given, and optionally a checkpoint.
type AuditAppend struct {
	// Records must continue the chain: Records[0].Seq == head.Seq+1, each
	// next seq one more, Records[0].PrevHash == head.Hash (32 zero bytes on
	// an empty log) and each PrevHash the Hash of the record before.
	Records []*typesv1.AuditRecord
	// Checkpoint, if set, is stored too; its seq must be that of one of
	// the records or of the head.
	Checkpoint *typesv1.AuditCheckpoint
}

// ListAuditRequest filters ListAudit. Records come in seq order.
type ListAuditRequest struct {
	// FromSeq is the first seq to return; 0 means 1.
	FromSeq uint64
	// Since and Until (unix nanoseconds, 0 = unbounded) keep records with
	// Since <= time < Until.
	Since, Until int64
	// Limit 0 means no limit.
	Limit int
}

// AuditStore persists the append-only, hash-chained audit log (see
// pkg/audit). The store checks that appends continue the chain; it never
// computes hashes itself, so a verifier does not have to trust it.
type AuditStore interface {
	// AppendAudit runs fn with the current head inside one write
	// transaction and stores what it returns atomically, moving the head
	// to the last record. fn may run more than once on backends that retry
	// (several servers appending at once); an error from fn aborts and is
	// returned. A result that does not continue the chain is
	// ErrInvalidArgument and stores nothing. Returns the new head.
	AppendAudit(ctx context.Context, fn func(head AuditHead) (AuditAppend, error)) (AuditHead, error)
	// AuditHead returns the head as stored.
	AuditHead(ctx context.Context) (AuditHead, error)
	// ListAudit returns records in seq order as stored (it does not check
	// them).
	ListAudit(ctx context.Context, req ListAuditRequest) ([]*typesv1.AuditRecord, error)
	// ListAuditCheckpoints returns up to limit (0 = all) checkpoints with
	// seq >= fromSeq, in seq order.
	ListAuditCheckpoints(ctx context.Context, fromSeq uint64, limit int) ([]*typesv1.AuditCheckpoint, error)
}
