package etcd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// The audit chain's keys. Records are stored in groups, one key per group
// of consecutive records, so that one AppendAudit of thousands of records
// stays one transaction well within etcd's default limit of 128
// operations:
//
//	meta/audit_head          seq (8 bytes, big endian) + hash of the head
//	audit/r/<first seq BE>   a group: (uvarint length, AuditRecord)...
//	audit/c/<seq BE><key id> AuditCheckpoint
const (
	keyAuditHead           = "meta/audit_head"
	prefixAuditRecords     = "audit/r/"
	prefixAuditCheckpoints = "audit/c/"
)

// A group closes at this many records or bytes, whichever comes first.
// With the head and a checkpoint, a transaction at etcd's default limit
// carries 126 groups: at least 8064 small records, or 8 MiB.
const (
	auditGroupRecords = 64
	auditGroupBytes   = 64 << 10
)

// auditPage is the number of groups one range request reads (at most
// 4 MiB of records).
const auditPage = 64

var _ store.AuditStore = (*Store)(nil)

func (k keys) auditHead() string { return k.prefix + keyAuditHead }

func (k keys) auditGroup(firstSeq uint64) string {
	return k.prefix + prefixAuditRecords + string(binary.BigEndian.AppendUint64(nil, firstSeq))
}

func (k keys) auditCheckpoint(seq uint64, keyID string) string {
	return k.prefix + prefixAuditCheckpoints + string(binary.BigEndian.AppendUint64(nil, seq)) + keyID
}

// AppendAudit reads the head, runs fn, and commits the records, the
// checkpoint and the new head in one transaction that fails if another
// server moved the head meanwhile; then it runs fn again on the new head.
func (s *Store) AppendAudit(ctx context.Context, fn func(store.AuditHead) (store.AuditAppend, error)) (store.AuditHead, error) {
	const op = "append audit"
	if fn == nil {
		return store.AuditHead{}, fmt.Errorf("%s: fn is nil: %w", op, store.ErrInvalidArgument)
	}
	var out store.AuditHead
	err := s.retry(ctx, op, func() (bool, error) {
		head, modRev, err := s.loadAuditHead(ctx, op)
		if err != nil {
			return false, err
		}
		app, err := fn(store.AuditHead{Seq: head.Seq, Hash: bytes.Clone(head.Hash)})
		if err != nil {
			return false, err
		}
		if err := app.Check(head); err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		cmps, ops, next, err := s.auditOps(head, app)
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		if len(ops) == 0 {
			out = head
			return true, s.check(ctx, op)
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.keys.auditHead()), "=", modRev))
		resp, err := s.txn(ctx, op, cmps, ops, []clientv3.Op{clientv3.OpGet(s.keys.auditHead(), clientv3.WithKeysOnly())})
		if err != nil {
			return false, err
		}
		if resp.Succeeded {
			out = next
			return true, nil
		}
		kv := first(resp.Responses[0].GetResponseRange().GetKvs())
		if kv == nil && modRev != 0 || kv != nil && kv.ModRevision != modRev {
			return false, nil // another server appended: run fn again
		}
		if cp := app.Checkpoint; cp != nil && len(app.Records) == 0 {
			return false, fmt.Errorf("%s: checkpoint at seq %d by key %s: %w", op, cp.Seq, cp.KeyId, store.ErrAlreadyExists)
		}
		return false, fmt.Errorf("%s: a checkpoint or record group at seq %d or later exists though the head is at %d: %w",
			op, head.Seq, head.Seq, store.ErrAlreadyExists)
	})
	if err != nil {
		return store.AuditHead{}, err
	}
	return out, nil
}

// auditOps builds the comparisons and writes of an append Check accepted,
// and the head it leads to.
func (s *Store) auditOps(head store.AuditHead, app store.AuditAppend) ([]clientv3.Cmp, []clientv3.Op, store.AuditHead, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	var group []byte
	groupStart, n := uint64(0), 0
	flush := func() {
		if n > 0 {
			k := s.keys.auditGroup(groupStart)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			ops = append(ops, clientv3.OpPut(k, string(group)))
		}
		group, n = nil, 0
	}
	for _, r := range app.Records {
		b, err := proto.Marshal(r)
		if err != nil {
			return nil, nil, head, fmt.Errorf("encode audit record %d: %w", r.Seq, err)
		}
		if n == 0 {
			groupStart = r.Seq
		}
		group = binary.AppendUvarint(group, uint64(len(b)))
		group = append(group, b...)
		n++
		if n == auditGroupRecords || len(group) >= auditGroupBytes {
			flush()
		}
		head = store.AuditHead{Seq: r.Seq, Hash: r.Hash}
	}
	flush()
	if len(app.Records) > 0 {
		ops = append(ops, clientv3.OpPut(s.keys.auditHead(), string(append(binary.BigEndian.AppendUint64(nil, head.Seq), head.Hash...))))
	}
	if cp := app.Checkpoint; cp != nil {
		b, err := proto.Marshal(cp)
		if err != nil {
			return nil, nil, head, fmt.Errorf("encode audit checkpoint %d: %w", cp.Seq, err)
		}
		k := s.keys.auditCheckpoint(cp.Seq, cp.KeyId)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		ops = append(ops, clientv3.OpPut(k, string(b)))
	}
	return cmps, ops, store.AuditHead{Seq: head.Seq, Hash: bytes.Clone(head.Hash)}, nil
}

// loadAuditHead reads the head and the revision it was last written at (0
// if never).
func (s *Store) loadAuditHead(ctx context.Context, op string) (store.AuditHead, int64, error) {
	resp, err := s.get(ctx, op, s.keys.auditHead())
	if err != nil {
		return store.AuditHead{}, 0, err
	}
	kv := first(resp.Kvs)
	if kv == nil {
		return store.AuditHead{}, 0, nil
	}
	if len(kv.Value) != 8+store.AuditHashSize {
		return store.AuditHead{}, 0, fmt.Errorf("%s: corrupt audit head: %d bytes, want %d", op, len(kv.Value), 8+store.AuditHashSize)
	}
	return store.AuditHead{Seq: binary.BigEndian.Uint64(kv.Value[:8]), Hash: kv.Value[8:]}, kv.ModRevision, nil
}

// AuditHead returns the head as stored.
func (s *Store) AuditHead(ctx context.Context) (store.AuditHead, error) {
	h, _, err := s.loadAuditHead(ctx, "read audit head")
	return h, err
}

// ListAudit returns records in seq order as stored, reading from the group
// that holds FromSeq. A group that does not decode yields a record holding
// only its first seq and a reason saying so, so that a verifier reports
// that record instead of the listing failing.
func (s *Store) ListAudit(ctx context.Context, req store.ListAuditRequest) ([]*typesv1.AuditRecord, error) {
	const op = "list audit"
	if err := checkListAudit(req); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	from := max(req.FromSeq, 1)
	p := s.keys.under(prefixAuditRecords)
	// The group holding from starts at or before it: the last key <= from.
	resp, err := s.get(ctx, op, p, clientv3.WithRange(afterKey(s.keys.auditGroup(from))),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	start := s.keys.auditGroup(from)
	if kv := first(resp.Kvs); kv != nil {
		start = string(kv.Key)
	}
	var out []*typesv1.AuditRecord
	err = s.scan(ctx, op, start, prefixEnd(p), resp.Header.Revision, false, auditPage, func(kv *mvccpb.KeyValue) (bool, error) {
		for _, r := range decodeAuditGroup(kv.Key[len(p):], kv.Value) {
			if r.Seq < from || req.Since != 0 && r.Time < req.Since || req.Until != 0 && r.Time >= req.Until {
				continue
			}
			out = append(out, r)
			if req.Limit > 0 && len(out) == req.Limit {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodeAuditGroup splits a stored group into its records; from the first
// part that does not decode on, it stands in one record for the rest.
func decodeAuditGroup(key, v []byte) []*typesv1.AuditRecord {
	var out []*typesv1.AuditRecord
	next := uint64(0)
	if len(key) == 8 {
		next = binary.BigEndian.Uint64(key)
	}
	for len(v) > 0 {
		n, w := binary.Uvarint(v)
		var err error
		r := &typesv1.AuditRecord{}
		switch {
		case w <= 0 || n > uint64(len(v)-w):
			err = errors.New("bad length prefix")
		default:
			err = proto.Unmarshal(v[w:w+int(n)], r)
		}
		if err != nil {
			return append(out, &typesv1.AuditRecord{Seq: next, Reason: "stored record does not decode: " + err.Error()})
		}
		out = append(out, r)
		next = r.Seq + 1
		v = v[w+int(n):]
	}
	return out
}

// checkListAudit validates a ListAudit request.
func checkListAudit(req store.ListAuditRequest) error {
	switch {
	case req.Since < 0:
		return fmt.Errorf("since %d is negative: %w", req.Since, store.ErrInvalidArgument)
	case req.Until < 0:
		return fmt.Errorf("until %d is negative: %w", req.Until, store.ErrInvalidArgument)
	case req.Until != 0 && req.Until < req.Since:
		return fmt.Errorf("until %d is before since %d: %w", req.Until, req.Since, store.ErrInvalidArgument)
	case req.Limit < 0:
		return fmt.Errorf("limit %d is negative: %w", req.Limit, store.ErrInvalidArgument)
	}
	return nil
}

// ListAuditCheckpoints returns up to limit (0 = all) checkpoints with seq
// >= fromSeq, in seq order.
func (s *Store) ListAuditCheckpoints(ctx context.Context, fromSeq uint64, limit int) ([]*typesv1.AuditCheckpoint, error) {
	const op = "list audit checkpoints"
	if limit < 0 {
		return nil, fmt.Errorf("%s: limit %d is negative: %w", op, limit, store.ErrInvalidArgument)
	}
	p := s.keys.under(prefixAuditCheckpoints)
	var out []*typesv1.AuditCheckpoint
	err := s.scan(ctx, op, s.keys.auditCheckpoint(fromSeq, ""), prefixEnd(p), 0, false, 0, func(kv *mvccpb.KeyValue) (bool, error) {
		cp := &typesv1.AuditCheckpoint{}
		if err := proto.Unmarshal(kv.Value, cp); err != nil && len(kv.Key) >= len(p)+8 {
			// A stand-in a verifier reports as invalid, as for records.
			cp = &typesv1.AuditCheckpoint{Seq: binary.BigEndian.Uint64(kv.Key[len(p):]), KeyId: string(kv.Key[len(p)+8:])}
		}
		out = append(out, cp)
		return limit == 0 || len(out) < limit, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
