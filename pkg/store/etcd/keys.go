package etcd

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"github.com/nhid/nhid/pkg/store/internal/records"
	"strconv"
)

// The key layout under the store's prefix P. Index keys are built from
// length-prefixed fields (see appendField) so that no value, whatever bytes
// it holds, can make two keys collide or a prefix scan leak into another
// value's rows. Everything one Watch needs lives under P+"r/", so one etcd
// watch sees every record change and none of the index churn.
//
//	meta/schema            layout version
//	meta/rev               the sync revision marker (see revision.go)
//	meta/compacted         tombstones at or below this revision were pruned
//	r/e/<id>               Entry
//	r/n/<spiffe id>        Node
//	r/b/<trust domain>     Bundle
//	r/g/<id>               Grant
//	x/p/<parent><id>       Entry (a covering copy: snapshots read one range)
//	x/s/<selector><id>     "" (selector → entries)
//	x/d/<spiffe><parent><sha256(selector set)>  entry id (duplicate rule;
//	                       its prefix is also the SPIFFE ID index)
//	t/<id>                 "" (tombstone of a deleted entry)
//	k/<id>                 JoinToken
//	l/<id>                 IssuedSVID
//	x/l/<expiry><id>       "" (ledger rows by expiry)
//	x/g/...                grant indexes (see grants_index.go)
//	election/<name>/       the leader elections of Lead
const (
	keySchema    = "meta/schema"
	keyRevision  = "meta/rev"
	keyCompacted = "meta/compacted"

	prefixRecords    = "r/"
	prefixEntries    = "r/e/"
	prefixNodes      = "r/n/"
	prefixBundles    = "r/b/"
	prefixGrants     = "r/g/"
	prefixByParent   = "x/p/"
	prefixBySelector = "x/s/"
	prefixDups       = "x/d/"
	prefixTombstones = "t/"
	prefixTokens     = "k/"
	prefixLedger     = "l/"
	prefixLedgerExp  = "x/l/"

	// prefixElection is where servers sharing the store elect the one
	// that runs a job (Lead's name follows).
	prefixElection = "election/"
)

// schemaVersion is the key layout version; Open refuses other versions so
// that an older binary never misreads a newer layout.
const schemaVersion = "1"

// keys builds the keys of one store prefix.
type keys struct{ prefix string }

func (k keys) schema() string    { return k.prefix + keySchema }
func (k keys) revision() string  { return k.prefix + keyRevision }
func (k keys) compacted() string { return k.prefix + keyCompacted }

func (k keys) entry(id string) string          { return k.prefix + prefixEntries + id }
func (k keys) node(spiffeID string) string     { return k.prefix + prefixNodes + spiffeID }
func (k keys) bundle(td string) string         { return k.prefix + prefixBundles + td }
func (k keys) grant(id string) string          { return k.prefix + prefixGrants + id }
func (k keys) tombstone(id string) string      { return k.prefix + prefixTombstones + id }
func (k keys) token(id string) string          { return k.prefix + prefixTokens + id }
func (k keys) ledger(id string) string         { return k.prefix + prefixLedger + id }
func (k keys) under(prefix string) string      { return k.prefix + prefix }
func (k keys) byParent(parent string) string   { return k.prefix + prefixByParent + field(parent) }
func (k keys) bySelector(sel string) string    { return k.prefix + prefixBySelector + field(sel) }
func (k keys) bySPIFFEID(spiffe string) string { return k.prefix + prefixDups + field(spiffe) }

// ledgerExpiry orders ledger rows by expiry so that pruning reads only what
// it drops.
func (k keys) ledgerExpiry(expiresAt int64, id string) string {
	return k.prefix + prefixLedgerExp + string(binary.BigEndian.AppendUint64(nil, uint64(expiresAt))) + id
}

// dup identifies an entry for the duplicate rule: its SPIFFE ID, its parent
// and its selector set (order and repetition do not matter), hashed so
// that entries with many long selectors stay short keys.
func (k keys) dup(spiffeID, parentID string, selectors []string) string {
	var sels []byte
	for _, s := range records.UniqueStrings(selectors) {
		sels = binary.AppendUvarint(sels, uint64(len(s)))
		sels = append(sels, s...)
	}
	sum := sha256.Sum256(sels)
	return k.bySPIFFEID(spiffeID) + field(parentID) + string(sum[:])
}

// field is s with a uvarint length prefix.
func field(s string) string {
	b := binary.AppendUvarint(make([]byte, 0, len(s)+2), uint64(len(s)))
	return string(append(b, s...))
}

// prefixEnd is the end of the range of every key starting with p.
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	// Only possible for an all-0xff prefix, which no key here has.
	return "\x00"
}

// afterKey is the smallest key that sorts after k.
func afterKey(k string) string { return k + "\x00" }

// formatInt and parseInt encode the small counters kept in meta keys.
func formatInt(v int64) string { return strconv.FormatInt(v, 10) }

func parseInt(key string, v []byte) (int64, error) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("corrupt %s: %q", key, v)
	}
	return n, nil
}
