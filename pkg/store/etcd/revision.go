package etcd

import (
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// Sync revisions. The store contract gives every created, updated or
// deleted entry, node and bundle a revision of its own, in commit order,
// and a batch of n entries n revisions. etcd gives a whole transaction one
// revision, so a sync revision is that etcd revision followed by the
// record's position in its transaction:
//
//	revision = modRevision << subBits | sub
//
// Sync revisions are global across every server sharing the etcd cluster,
// ordered like etcd's, and a record's is derived from the ModRevision etcd
// keeps for it: the stored record holds only sub. An etcd revision is never
// reused, so neither is a sync revision; a client may resume from one
// through any server.
//
// Writes that agents do not sync (join tokens, ledger rows, grants) move
// etcd's revision but not the sync revision: Revision() is read from the
// marker key meta/rev, which every entry, node and bundle transaction
// rewrites with the sub of its last record.
const (
	subBits = 16
	maxSub  = 1<<subBits - 1
)

// syncRevision composes a sync revision.
func syncRevision(modRevision, sub int64) int64 { return modRevision<<subBits | sub }

// splitRevision is the inverse of syncRevision.
func splitRevision(rev int64) (modRevision, sub int64) { return rev >> subBits, rev & maxSub }

// markerRevision is the sync revision the marker key says; 0 before the
// first write.
func markerRevision(kv *mvccpb.KeyValue) (int64, error) {
	if kv == nil {
		return 0, nil
	}
	sub, err := parseInt(keyRevision, kv.Value)
	if err != nil || sub > maxSub {
		return 0, fmt.Errorf("corrupt revision marker %q", kv.Value)
	}
	return syncRevision(kv.ModRevision, sub), nil
}

// putMarker is the op that records lastSub as the sub of the last record
// a transaction changes.
func (s *Store) putMarker(lastSub int64) clientv3.Op {
	return clientv3.OpPut(s.keys.revision(), formatInt(lastSub))
}

// revisioned is a record that carries its sync revision.
type revisioned interface {
	proto.Message
	GetRevision() int64
}

// decodeRecord decodes a stored record into m and turns the sub it holds
// into its sync revision; set stores that revision into m.
func decodeRecord[M revisioned](kv *mvccpb.KeyValue, m M, set func(M, int64)) (M, error) {
	if err := proto.Unmarshal(kv.Value, m); err != nil {
		return m, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	sub := m.GetRevision()
	if sub < 0 || sub > maxSub {
		return m, fmt.Errorf("decode %s: corrupt revision %d", kv.Key, sub)
	}
	set(m, syncRevision(kv.ModRevision, sub))
	return m, nil
}

// marshalRecord encodes m with sub in place of its revision, restoring the
// revision afterwards so the caller's copy is unchanged.
func marshalRecord[M revisioned](m M, sub int64, set func(M, int64)) (string, error) {
	rev := m.GetRevision()
	set(m, sub)
	b, err := proto.Marshal(m)
	set(m, rev)
	if err != nil {
		return "", fmt.Errorf("encode %T: %w", m, err)
	}
	return string(b), nil
}
