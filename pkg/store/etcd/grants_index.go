package etcd

import (
	"encoding/binary"
	"errors"
	"math"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Grant index prefixes. Every row but the end rows ends in the grant's
// order key, which sorts newest first (see orderKey), so a forward range
// of one index value lists its grants in the order ListGrants promises and
// a page token is the order key of the last grant returned.
const (
	prefixGrantByCreated      = "x/g/c/"  // order
	prefixGrantBySPIFFE       = "x/g/s/"  // field(spiffe_id) order
	prefixGrantByEntry        = "x/g/e/"  // field(entry_id) order
	prefixGrantByStatus       = "x/g/t/"  // field(status) order
	prefixGrantBySPIFFEStatus = "x/g/st/" // field(spiffe_id) field(status) order
	prefixGrantByEnd          = "x/g/x/"  // be64(end) id, for pruning
	prefixGrantActive         = "x/g/a/"  // field(spiffe_id) be64(expires_at) id, ACTIVE only
)

// orderKey sorts grants by created_at, then id, both descending: the
// complement of created_at, then the id's bytes escaped (0x00 → 01 01,
// 0x01 → 01 02) and terminated by 0x00, all complemented. The escaping
// makes the encoding prefix-free, so that complementing reverses the
// order exactly, also between an id and its extensions.
func orderKey(createdAt int64, id string) string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)+2), math.MaxUint64-uint64(createdAt))
	for i := 0; i < len(id); i++ {
		switch c := id[i]; c {
		case 0x00, 0x01:
			b = append(b, ^byte(0x01), ^(c + 1))
		default:
			b = append(b, ^c)
		}
	}
	return string(append(b, ^byte(0x00)))
}

var errBadOrderKey = errors.New("malformed grant order key")

// orderID recovers the grant id from an order key.
func orderID(order string) (string, error) {
	if len(order) < 9 {
		return "", errBadOrderKey
	}
	var id []byte
	for i := 8; i < len(order); i++ {
		switch c := ^order[i]; c {
		case 0x00:
			if i != len(order)-1 {
				return "", errBadOrderKey
			}
			return string(id), nil
		case 0x01:
			if i++; i == len(order) || (^order[i] != 0x01 && ^order[i] != 0x02) {
				return "", errBadOrderKey
			}
			id = append(id, ^order[i]-1)
		default:
			id = append(id, c)
		}
	}
	return "", errBadOrderKey
}

// grantEnd is when a grant stops mattering: when it ended, else when it
// expires; 0 if neither is known.
func grantEnd(g *typesv1.Grant) int64 {
	if g.GetEndedAt() != 0 {
		return g.GetEndedAt()
	}
	return g.GetExpiresAt()
}

// grantIndexKeys lists the index rows of g (not the record).
func (s *Store) grantIndexKeys(g *typesv1.Grant) []string {
	order := orderKey(g.GetCreatedAt(), g.GetId())
	st := field(g.GetStatus().String())
	ks := []string{
		s.keys.under(prefixGrantByCreated) + order,
		s.keys.under(prefixGrantBySPIFFE) + field(g.GetSpiffeId()) + order,
		s.keys.under(prefixGrantByEntry) + field(g.GetEntryId()) + order,
		s.keys.under(prefixGrantByStatus) + st + order,
		s.keys.under(prefixGrantBySPIFFEStatus) + field(g.GetSpiffeId()) + st + order,
	}
	if end := grantEnd(g); end > 0 {
		ks = append(ks, s.keys.under(prefixGrantByEnd)+string(binary.BigEndian.AppendUint64(nil, uint64(end)))+g.GetId())
	}
	if g.GetStatus() == typesv1.GrantStatus_GRANT_STATUS_ACTIVE && g.GetExpiresAt() > 0 {
		ks = append(ks, s.keys.under(prefixGrantActive)+field(g.GetSpiffeId())+
			string(binary.BigEndian.AppendUint64(nil, uint64(g.GetExpiresAt())))+g.GetId())
	}
	return ks
}

// grantIndexOps moves g's index rows from prev (nil on create) to next
// (nil on delete): rows both have are left alone.
func (s *Store) grantIndexOps(prev, next *typesv1.Grant) []clientv3.Op {
	var before, after []string
	if prev != nil {
		before = s.grantIndexKeys(prev)
	}
	if next != nil {
		after = s.grantIndexKeys(next)
	}
	keep := make(map[string]bool, len(after))
	for _, k := range after {
		keep[k] = true
	}
	var ops []clientv3.Op
	had := make(map[string]bool, len(before))
	for _, k := range before {
		had[k] = true
		if !keep[k] {
			ops = append(ops, clientv3.OpDelete(k))
		}
	}
	for _, k := range after {
		if !had[k] {
			ops = append(ops, clientv3.OpPut(k, ""))
		}
	}
	return ops
}

func setGrantRevision(g *typesv1.Grant, rev int64) { g.Revision = rev }

// decodeGrant decodes a stored grant; its revision is the etcd revision
// of its last write, which every grant write takes anew and which the
// entry, node and bundle sync revision does not follow.
func decodeGrant(kv *mvccpb.KeyValue) (*typesv1.Grant, error) {
	g, err := decodeRecord(kv, &typesv1.Grant{}, setGrantRevision)
	if err != nil {
		return nil, err
	}
	g.Revision = kv.ModRevision
	return g, nil
}
