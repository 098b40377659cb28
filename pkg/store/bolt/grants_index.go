package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Grant buckets. Every index row ends in the grant's order key (created_at,
// then id: see grantOrderKey), so a reverse scan of one index value lists
// its grants newest first and a page token is the order key of the last
// grant returned.
var (
	bucketGrants              = []byte("grants")                 // id → Grant
	bucketGrantByCreated      = []byte("grant_by_created")       // order → nil
	bucketGrantBySPIFFE       = []byte("grant_by_spiffe")        // field(spiffe_id) order → nil
	bucketGrantByEntry        = []byte("grant_by_entry")         // field(entry_id) order → nil
	bucketGrantByStatus       = []byte("grant_by_status")        // field(status) order → nil
	bucketGrantBySPIFFEStatus = []byte("grant_by_spiffe_status") // field(spiffe_id) field(status) order → nil
	bucketGrantByEnd          = []byte("grant_by_end")           // end time id → nil, for pruning
	bucketGrantActive         = []byte("grant_active")           // field(spiffe_id) expires_at id → nil, ACTIVE only

	grantBuckets = [][]byte{
		bucketGrants, bucketGrantByCreated, bucketGrantBySPIFFE, bucketGrantByEntry,
		bucketGrantByStatus, bucketGrantBySPIFFEStatus, bucketGrantByEnd, bucketGrantActive,
	}
)

// metaGrantRevision is the meta key of the grant revision counter.
var metaGrantRevision = []byte("grant_revision")

// grantOrderKey orders grants by creation time, then id: big-endian
// created_at followed by the id bytes.
func grantOrderKey(createdAt int64, id string) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), uint64(createdAt)), id...)
}

// statusField is a status as an index value.
func statusField(st typesv1.GrantStatus) string { return st.String() }

// grantEnd is when a grant stops mattering: when it ended, else when it
// expires; 0 if neither is known.
func grantEnd(g *typesv1.Grant) int64 {
	if g.GetEndedAt() != 0 {
		return g.GetEndedAt()
	}
	return g.GetExpiresAt()
}

// grantIndexRows lists the index rows of g (not the record row).
func grantIndexRows(g *typesv1.Grant) []row {
	order := grantOrderKey(g.GetCreatedAt(), g.GetId())
	prefixed := func(fields ...string) []byte {
		var b []byte
		for _, f := range fields {
			b = appendField(b, f)
		}
		return append(b, order...)
	}
	st := statusField(g.GetStatus())
	rows := []row{
		{bucketGrantByCreated, order, []byte{}},
		{bucketGrantBySPIFFE, prefixed(g.GetSpiffeId()), []byte{}},
		{bucketGrantByEntry, prefixed(g.GetEntryId()), []byte{}},
		{bucketGrantByStatus, prefixed(st), []byte{}},
		{bucketGrantBySPIFFEStatus, prefixed(g.GetSpiffeId(), st), []byte{}},
	}
	if end := grantEnd(g); end > 0 {
		rows = append(rows, row{bucketGrantByEnd, expiryKey(end, g.GetId()), []byte{}})
	}
	if g.GetStatus() == typesv1.GrantStatus_GRANT_STATUS_ACTIVE && g.GetExpiresAt() > 0 {
		key := append(appendField(nil, g.GetSpiffeId()), expiryKey(g.GetExpiresAt(), g.GetId())...)
		rows = append(rows, row{bucketGrantActive, key, []byte{}})
	}
	return rows
}

// putGrant stores g and its index rows; prev, if not nil, is the stored
// version being replaced, whose index rows that changed are removed.
func (w *writeTx) putGrant(g, prev *typesv1.Grant) error {
	v, err := marshal(g)
	if err != nil {
		return err
	}
	if err := w.bucket(bucketGrants).Put([]byte(g.GetId()), v); err != nil {
		return fmt.Errorf("put grant %q: %w", g.GetId(), err)
	}
	rows := grantIndexRows(g)
	if prev != nil {
		if err := w.deleteRows(subtractRows(grantIndexRows(prev), rows)); err != nil {
			return err
		}
	}
	return w.putRows(rows)
}

// dropGrant removes g's record and index rows.
func (w *writeTx) dropGrant(g *typesv1.Grant) error {
	rows := append(grantIndexRows(g), row{bucket: bucketGrants, key: []byte(g.GetId())})
	return w.deleteRows(rows)
}

func (w *writeTx) deleteRows(rows []row) error {
	for _, r := range rows {
		if err := w.bucket(r.bucket).Delete(r.key); err != nil {
			return fmt.Errorf("delete %q from %s: %w", r.key, r.bucket, err)
		}
	}
	return nil
}

// subtractRows returns the rows of a that are not in b.
func subtractRows(a, b []row) []row {
	var out []row
	for _, r := range a {
		found := false
		for _, o := range b {
			if bytes.Equal(r.bucket, o.bucket) && bytes.Equal(r.key, o.key) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, r)
		}
	}
	return out
}

// nextGrantRevision advances the grant revision counter.
func (w *writeTx) nextGrantRevision() (int64, error) {
	rev, err := readMetaInt(w.tx, metaGrantRevision)
	if err != nil {
		return 0, err
	}
	rev++
	if err := w.bucket(bucketMeta).Put(metaGrantRevision, revKey(rev)); err != nil {
		return 0, fmt.Errorf("store grant revision %d: %w", rev, err)
	}
	return rev, nil
}

// loadGrant reads a grant, or fails with an error wrapping ErrNotFound.
func loadGrant(b *bbolt.Bucket, id string) (*typesv1.Grant, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("grant %q: %w", id, store.ErrNotFound)
	}
	g := &typesv1.Grant{}
	if err := unmarshal(v, g); err != nil {
		return nil, fmt.Errorf("grant %q: %w", id, err)
	}
	return g, nil
}

// prefixEnd is the smallest key after every key starting with p, or nil
// when there is none (p empty or all 0xff).
func prefixEnd(p []byte) []byte {
	b := bytes.Clone(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return b[:i+1]
		}
	}
	return nil
}

// revCursor walks the order keys stored under one index prefix backwards:
// newest grant first.
type revCursor struct {
	c      *bbolt.Cursor
	prefix []byte
	order  []byte // the current order key; nil when exhausted
}

// newRevCursor positions a cursor at the newest order key under prefix
// that sorts before `before` (every key when before is nil).
func newRevCursor(tx *bbolt.Tx, bucket, prefix, before []byte) *revCursor {
	rc := &revCursor{c: tx.Bucket(bucket).Cursor(), prefix: prefix}
	var target []byte
	if before != nil {
		target = append(bytes.Clone(prefix), before...)
	} else {
		target = prefixEnd(prefix)
	}
	var k []byte
	if target != nil {
		k, _ = rc.c.Seek(target)
	}
	if k == nil {
		k, _ = rc.c.Last()
	} else {
		k, _ = rc.c.Prev()
	}
	rc.set(k)
	return rc
}

func (rc *revCursor) set(k []byte) {
	if hasPrefix(k, rc.prefix) {
		rc.order = k[len(rc.prefix):]
		return
	}
	rc.order = nil
}

// prev moves to the next older order key.
func (rc *revCursor) prev() {
	k, _ := rc.c.Prev()
	rc.set(k)
}
