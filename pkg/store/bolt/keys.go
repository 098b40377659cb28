package bolt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"
	"slices"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// Bucket names. Index keys are built from length-prefixed fields (see
// appendField) so that no value, whatever bytes it holds, can make two keys
// collide or a prefix scan leak into another value's rows.
var (
	bucketMeta        = []byte("meta")
	bucketEntries     = []byte("entries")           // id → Entry
	bucketEntryDups   = []byte("entry_dups")        // dupKey → id
	bucketByParent    = []byte("entry_by_parent")   // field(parent) id → nil
	bucketBySelector  = []byte("entry_by_selector") // field(selector) id → nil
	bucketBySPIFFEID  = []byte("entry_by_spiffe")   // field(spiffe_id) id → nil
	bucketByRevision  = []byte("entry_by_rev")      // rev → id, one row per live entry
	bucketTombstones  = []byte("tombstones")        // rev → id
	bucketNodes       = []byte("nodes")             // spiffe_id → Node
	bucketTokens      = []byte("tokens")            // id → JoinToken
	bucketBundles     = []byte("bundles")           // trust domain → Bundle
	bucketLedger      = []byte("ledger")            // id → IssuedSVID
	bucketLedgerByExp = []byte("ledger_by_expiry")  // expires_at id → nil

	// The audit chain (audit.go): records and checkpoints keyed by
	// big-endian seq; the head lives in the meta bucket.
	bucketAudit            = []byte("audit")             // seq → AuditRecord
	bucketAuditCheckpoints = []byte("audit_checkpoints") // seq → AuditCheckpoint
	auditBuckets           = [][]byte{bucketAudit, bucketAuditCheckpoints}

	// Reputation scores (reputation.go).
	bucketReputation  = []byte("reputation") // spiffe_id → Reputation
	reputationBuckets = [][]byte{bucketReputation}

	allBuckets = slices.Concat([][]byte{
		bucketMeta, bucketEntries, bucketEntryDups, bucketByParent,
		bucketBySelector, bucketBySPIFFEID, bucketByRevision, bucketTombstones,
		bucketNodes, bucketTokens, bucketBundles, bucketLedger, bucketLedgerByExp,
	}, grantBuckets, auditBuckets, reputationBuckets)
)

// Keys in the meta bucket.
var (
	metaSchema    = []byte("schema")
	metaRevision  = []byte("revision")
	metaCompacted = []byte("compacted")
)

func encodeUint64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, v)
}

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("corrupt counter: %d bytes, want 8", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// revKey encodes a revision so that byte order is numeric order.
func revKey(rev int64) []byte { return encodeUint64(uint64(rev)) }

// readMetaInt reads a non-negative counter from the meta bucket (0 if unset).
func readMetaInt(tx *bbolt.Tx, key []byte) (int64, error) {
	v := tx.Bucket(bucketMeta).Get(key)
	if v == nil {
		return 0, nil
	}
	u, err := decodeUint64(v)
	if err != nil {
		return 0, fmt.Errorf("meta %s: %w", key, err)
	}
	return int64(u), nil
}

func readRevision(tx *bbolt.Tx) (int64, error) { return readMetaInt(tx, metaRevision) }

// appendField appends s with a uvarint length prefix.
func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// indexKey is the row of id under value in a value → ids index.
func indexKey(value, id string) []byte {
	return append(appendField(make([]byte, 0, len(value)+len(id)+2), value), id...)
}

// dupKey identifies an entry for the duplicate rule: its SPIFFE ID, its
// parent and its selector set (order and repetition do not matter). The
// selector set is hashed so that entries with many long selectors stay
// within bbolt's key size limit; the IDs stay in the clear so that entries
// created together, which usually share ID prefixes, land on the same pages.
func dupKey(spiffeID, parentID string, selectors []string) []byte {
	var sels []byte
	for _, s := range records.UniqueStrings(selectors) {
		sels = appendField(sels, s)
	}
	sum := sha256.Sum256(sels)
	b := make([]byte, 0, len(spiffeID)+len(parentID)+len(sum)+8)
	b = appendField(b, spiffeID)
	b = appendField(b, parentID)
	return append(b, sum[:]...)
}

// afterKey is the smallest key that sorts after k.
func afterKey(k string) []byte { return append([]byte(k), 0) }

// hasPrefix reports whether k is a row of the index prefix.
func hasPrefix(k, prefix []byte) bool { return k != nil && bytes.HasPrefix(k, prefix) }

// marshal encodes a record for storage.
func marshal(m proto.Message) ([]byte, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	return b, nil
}

// unmarshal decodes a stored record into m. bbolt's value is only valid in
// the transaction, and proto.Unmarshal copies what it keeps.
func unmarshal(b []byte, m proto.Message) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("decode %T: %w", m, err)
	}
	return nil
}
