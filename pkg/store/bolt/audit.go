package bolt

import (
	"bytes"
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// metaAuditHead holds the audit chain's head: its seq (8 bytes, big
// endian) followed by its hash.
var metaAuditHead = []byte("audit_head")

// AppendAudit runs fn with the head in one write transaction and stores the
// records it returns (keyed by big-endian seq), its checkpoint (keyed by
// big-endian seq and key id) and the new head, or nothing.
func (s *Store) AppendAudit(ctx context.Context, fn func(store.AuditHead) (store.AuditAppend, error)) (store.AuditHead, error) {
	var out store.AuditHead
	err := s.update(ctx, "append audit", func(w *writeTx) error {
		head, err := readAuditHead(w.tx)
		if err != nil {
			return err
		}
		app, err := fn(store.AuditHead{Seq: head.Seq, Hash: bytes.Clone(head.Hash)})
		if err != nil {
			return err
		}
		if err := app.Check(head); err != nil {
			return err
		}
		if out, err = putAudit(w, head, app); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return store.AuditHead{}, err
	}
	return out, nil
}

// putAudit writes what Check accepted and returns the new head.
func putAudit(w *writeTx, head store.AuditHead, app store.AuditAppend) (store.AuditHead, error) {
	records := w.bucket(bucketAudit)
	// Seqs only grow: fill pages instead of splitting them in half.
	records.FillPercent = appendFillPercent
	for _, r := range app.Records {
		k := encodeUint64(r.Seq)
		if records.Get(k) != nil {
			return head, fmt.Errorf("audit record %d is stored already though the head is at %d: the store is inconsistent", r.Seq, head.Seq)
		}
		v, err := marshal(r)
		if err != nil {
			return head, err
		}
		if err := records.Put(k, v); err != nil {
			return head, fmt.Errorf("put audit record %d: %w", r.Seq, err)
		}
		head = store.AuditHead{Seq: r.Seq, Hash: r.Hash}
	}
	if cp := app.Checkpoint; cp != nil {
		cps := w.bucket(bucketAuditCheckpoints)
		k := checkpointKey(cp.Seq, cp.KeyId)
		if cps.Get(k) != nil {
			return head, fmt.Errorf("audit checkpoint at seq %d by key %s: %w", cp.Seq, cp.KeyId, store.ErrAlreadyExists)
		}
		v, err := marshal(cp)
		if err != nil {
			return head, err
		}
		if err := cps.Put(k, v); err != nil {
			return head, fmt.Errorf("put audit checkpoint %d: %w", cp.Seq, err)
		}
	}
	if len(app.Records) > 0 {
		v := append(encodeUint64(head.Seq), head.Hash...)
		if err := w.bucket(bucketMeta).Put(metaAuditHead, v); err != nil {
			return head, fmt.Errorf("store audit head: %w", err)
		}
	}
	return store.AuditHead{Seq: head.Seq, Hash: bytes.Clone(head.Hash)}, nil
}

// checkpointKey orders checkpoints by seq, then signer.
func checkpointKey(seq uint64, keyID string) []byte {
	return append(encodeUint64(seq), keyID...)
}

// readAuditHead reads the head from the meta bucket; its hash is only
// valid in the transaction.
func readAuditHead(tx *bbolt.Tx) (store.AuditHead, error) {
	v := tx.Bucket(bucketMeta).Get(metaAuditHead)
	if v == nil {
		return store.AuditHead{}, nil
	}
	if len(v) != 8+store.AuditHashSize {
		return store.AuditHead{}, fmt.Errorf("corrupt audit head: %d bytes, want %d", len(v), 8+store.AuditHashSize)
	}
	seq, _ := decodeUint64(v[:8])
	return store.AuditHead{Seq: seq, Hash: v[8:]}, nil
}

// AuditHead returns the head as stored.
func (s *Store) AuditHead(ctx context.Context) (store.AuditHead, error) {
	var out store.AuditHead
	err := s.view(ctx, "read audit head", func(tx *bbolt.Tx) error {
		h, err := readAuditHead(tx)
		out = store.AuditHead{Seq: h.Seq, Hash: bytes.Clone(h.Hash)}
		return err
	})
	return out, err
}

// ListAudit returns records in seq order as stored. A stored value that
// does not decode is returned as a record holding only its seq (from the
// key) and a reason saying so, so that a verifier reports that record
// instead of the listing failing.
func (s *Store) ListAudit(ctx context.Context, req store.ListAuditRequest) ([]*typesv1.AuditRecord, error) {
	if err := checkListAudit(req); err != nil {
		return nil, err
	}
	var out []*typesv1.AuditRecord
	err := s.view(ctx, "list audit", func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Seek(encodeUint64(max(req.FromSeq, 1))); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			r := decodeAuditRecord(k, v)
			if req.Since != 0 && r.Time < req.Since || req.Until != 0 && r.Time >= req.Until {
				continue
			}
			out = append(out, r)
			if req.Limit > 0 && len(out) == req.Limit {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodeAuditRecord decodes a stored record, or stands in for one that
// does not decode.
func decodeAuditRecord(k, v []byte) *typesv1.AuditRecord {
	r := &typesv1.AuditRecord{}
	if err := unmarshal(v, r); err != nil {
		seq, _ := decodeUint64(k)
		return &typesv1.AuditRecord{Seq: seq, Reason: "stored record does not decode: " + err.Error()}
	}
	return r
}

// decodeCheckpoint decodes a stored checkpoint, or stands in for one that
// does not decode with its seq and key id (from the key) and nothing else,
// so that a verifier reports it as invalid.
func decodeCheckpoint(k, v []byte) *typesv1.AuditCheckpoint {
	cp := &typesv1.AuditCheckpoint{}
	if err := unmarshal(v, cp); err != nil && len(k) >= 8 {
		seq, _ := decodeUint64(k[:8])
		return &typesv1.AuditCheckpoint{Seq: seq, KeyId: string(k[8:])}
	}
	return cp
}

// checkListAudit validates a ListAudit request.
func checkListAudit(req store.ListAuditRequest) error {
	switch {
	case req.Since < 0:
		return fmt.Errorf("list audit: since %d is negative: %w", req.Since, store.ErrInvalidArgument)
	case req.Until < 0:
		return fmt.Errorf("list audit: until %d is negative: %w", req.Until, store.ErrInvalidArgument)
	case req.Until != 0 && req.Until < req.Since:
		return fmt.Errorf("list audit: until %d is before since %d: %w", req.Until, req.Since, store.ErrInvalidArgument)
	case req.Limit < 0:
		return fmt.Errorf("list audit: limit %d is negative: %w", req.Limit, store.ErrInvalidArgument)
	}
	return nil
}

// ListAuditCheckpoints returns up to limit (0 = all) checkpoints with seq
// >= fromSeq, in seq order, as stored (see decodeCheckpoint).
func (s *Store) ListAuditCheckpoints(ctx context.Context, fromSeq uint64, limit int) ([]*typesv1.AuditCheckpoint, error) {
	if limit < 0 {
		return nil, fmt.Errorf("list audit checkpoints: limit %d is negative: %w", limit, store.ErrInvalidArgument)
	}
	var out []*typesv1.AuditCheckpoint
	err := s.view(ctx, "list audit checkpoints", func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketAuditCheckpoints).Cursor()
		for k, v := c.Seek(encodeUint64(fromSeq)); k != nil; k, v = c.Next() {
			out = append(out, decodeCheckpoint(k, v))
			if limit > 0 && len(out) == limit {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
