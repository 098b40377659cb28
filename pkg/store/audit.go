package store

import (
	"bytes"
	"context"
	"fmt"

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
	// the records or of the head, and its head_hash that record's hash.
	// Checkpoints are kept by (seq, key_id): several servers may sign the
	// same seq, one key only once (ErrAlreadyExists).
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

// AuditHashSize is the size of record hashes (SHA-256).
const AuditHashSize = 32

// maxAuditKeyIDLen bounds a checkpoint's key_id, which backends use in keys.
const maxAuditKeyIDLen = 128

// Check reports, as ErrInvalidArgument naming the field, whether a
// continues the chain whose head is head. Backends call it inside their
// write transaction; they never recompute hashes.
func (a AuditAppend) Check(head AuditHead) error {
	seq, prev := head.Seq, head.Hash
	if seq == 0 {
		prev = make([]byte, AuditHashSize)
	}
	for i, r := range a.Records {
		switch {
		case r == nil:
			return fmt.Errorf("audit append: records[%d] is nil: %w", i, ErrInvalidArgument)
		case r.GetSeq() != seq+1:
			return fmt.Errorf("audit append: records[%d].seq is %d, want %d (the chain's head is at %d): %w", i, r.GetSeq(), seq+1, head.Seq, ErrInvalidArgument)
		case !bytes.Equal(r.GetPrevHash(), prev):
			return fmt.Errorf("audit append: records[%d].prev_hash is not the hash of record %d: %w", i, seq, ErrInvalidArgument)
		case len(r.GetHash()) != AuditHashSize:
			return fmt.Errorf("audit append: records[%d].hash is %d bytes, want %d: %w", i, len(r.GetHash()), AuditHashSize, ErrInvalidArgument)
		}
		seq, prev = r.GetSeq(), r.GetHash()
	}
	cp := a.Checkpoint
	if cp == nil {
		return nil
	}
	switch {
	case cp.GetKeyId() == "" || len(cp.GetKeyId()) > maxAuditKeyIDLen:
		return fmt.Errorf("audit append: checkpoint.key_id must be 1 to %d bytes: %w", maxAuditKeyIDLen, ErrInvalidArgument)
	case cp.GetSeq() == 0 || cp.GetSeq() > seq || cp.GetSeq() < head.Seq:
		return fmt.Errorf("audit append: checkpoint.seq %d is neither the head's (%d) nor one of the appended records': %w", cp.GetSeq(), head.Seq, ErrInvalidArgument)
	}
	want := head.Hash
	if cp.GetSeq() > head.Seq {
		want = a.Records[cp.GetSeq()-head.Seq-1].GetHash()
	}
	if !bytes.Equal(cp.GetHeadHash(), want) {
		return fmt.Errorf("audit append: checkpoint.head_hash is not the hash of record %d: %w", cp.GetSeq(), ErrInvalidArgument)
	}
	return nil
}
