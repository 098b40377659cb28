package agentcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// State is everything the cache holds.
type State struct {
	// Revision is the sync revision the entries were read at; 0 if none.
	Revision int64
	// Bundle is the last trust bundle received; nil if none.
	Bundle *typesv1.Bundle
	// FederatedBundles are the bundles of federated trust domains last
	// received, ordered by trust domain; nil if none.
	FederatedBundles []*typesv1.Bundle
	// Entries are ordered by id.
	Entries []*typesv1.Entry
	// SVIDs are ordered by entry id; each belongs to one of Entries.
	SVIDs []SVID
}

// Change is one atomic update of the synced state.
type Change struct {
	// Reset drops every entry (and its SVID) before the rest is applied.
	Reset bool
	// Upserts are stored under their ids, replacing what was there.
	Upserts []*typesv1.Entry
	// DeletedIDs are removed with their SVIDs; unknown ids are ignored.
	DeletedIDs []string
	// Revision, when not 0, becomes the stored sync revision.
	Revision int64
	// Bundle, when not nil, replaces the stored bundle.
	Bundle *typesv1.Bundle
	// FederatedBundlesSet makes FederatedBundles replace the stored set of
	// federated bundles whole; an empty FederatedBundles then clears it.
	FederatedBundlesSet bool
	// FederatedBundles are the federated bundles, one per trust domain.
	// Ignored unless FederatedBundlesSet.
	FederatedBundles []*typesv1.Bundle
}

// Load reads the whole cache. A record that does not decode makes Load fail
// with an error wrapping ErrCorrupt and naming the record.
func (c *Cache) Load() (*State, error) {
	st := &State{}
	err := c.view("load", func(tx *bbolt.Tx) error {
		var err error
		if st.Revision, st.Bundle, err = readMeta(tx.Bucket(bucketMeta)); err != nil {
			return err
		}
		if st.Entries, err = readEntries(tx.Bucket(bucketEntries)); err != nil {
			return err
		}
		if st.FederatedBundles, err = readFederated(tx.Bucket(bucketFederated)); err != nil {
			return err
		}
		st.SVIDs, err = readSVIDs(tx.Bucket(bucketSVIDs))
		return err
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

func readMeta(meta *bbolt.Bucket) (int64, *typesv1.Bundle, error) {
	var rev int64
	if v := meta.Get(metaRevision); v != nil {
		r, err := decodeInt64(v)
		if err != nil {
			return 0, nil, corrupt("meta", metaRevision, err)
		}
		rev = r
	}
	v := meta.Get(metaBundle)
	if v == nil {
		return rev, nil, nil
	}
	b := &typesv1.Bundle{}
	if err := proto.Unmarshal(v, b); err != nil {
		return 0, nil, corrupt("meta", metaBundle, err)
	}
	return rev, b, nil
}

func readEntries(b *bbolt.Bucket) ([]*typesv1.Entry, error) {
	entries := make([]*typesv1.Entry, 0, b.Stats().KeyN)
	err := b.ForEach(func(k, v []byte) error {
		e := &typesv1.Entry{}
		if err := proto.Unmarshal(v, e); err != nil {
			return corrupt("entries", k, err)
		}
		if !bytes.Equal([]byte(e.GetId()), k) {
			return corrupt("entries", k, fmt.Errorf("record holds entry id %q", e.GetId()))
		}
		entries = append(entries, e)
		return nil
	})
	return entries, err
}

func readSVIDs(b *bbolt.Bucket) ([]SVID, error) {
	var svids []SVID
	err := b.ForEach(func(k, v []byte) error {
		s, err := decodeSVID(string(k), v)
		if err != nil {
			return corrupt("svids", k, err)
		}
		svids = append(svids, s)
		return nil
	})
	return svids, err
}

// Apply commits ch in one transaction.
func (c *Cache) Apply(ch Change) error {
	if err := validateChange(ch); err != nil {
		return fmt.Errorf("agent cache apply: %w", err)
	}
	return c.update("apply", func(tx *bbolt.Tx) error {
		if ch.Reset {
			if err := clearEntries(tx); err != nil {
				return err
			}
		}
		entries, svids := tx.Bucket(bucketEntries), tx.Bucket(bucketSVIDs)
		for _, e := range ch.Upserts {
			v, err := proto.MarshalOptions{Deterministic: true}.Marshal(e)
			if err != nil {
				return fmt.Errorf("encode entry %q: %w", e.GetId(), err)
			}
			if err := entries.Put([]byte(e.GetId()), v); err != nil {
				return fmt.Errorf("store entry %q: %w", e.GetId(), err)
			}
		}
		for _, id := range ch.DeletedIDs {
			if err := entries.Delete([]byte(id)); err != nil {
				return fmt.Errorf("delete entry %q: %w", id, err)
			}
			if err := svids.Delete([]byte(id)); err != nil {
				return fmt.Errorf("delete svid of entry %q: %w", id, err)
			}
		}
		if ch.Reset {
			if err := pruneOrphanSVIDs(entries, svids); err != nil {
				return err
			}
		}
		if ch.FederatedBundlesSet {
			if err := writeFederated(tx, ch.FederatedBundles); err != nil {
				return err
			}
		}
		return writeMeta(tx.Bucket(bucketMeta), ch)
	})
}

// pruneOrphanSVIDs drops the SVIDs whose entries a reset did not bring back.
func pruneOrphanSVIDs(entries, svids *bbolt.Bucket) error {
	var orphans [][]byte
	err := svids.ForEach(func(k, _ []byte) error {
		if entries.Get(k) == nil {
			orphans = append(orphans, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range orphans {
		if err := svids.Delete(k); err != nil {
			return fmt.Errorf("delete svid of entry %q: %w", k, err)
		}
	}
	return nil
}

func validateChange(ch Change) error {
	if ch.Revision < 0 {
		return fmt.Errorf("revision %d is negative", ch.Revision)
	}
	for i, e := range ch.Upserts {
		if e.GetId() == "" {
			return fmt.Errorf("upserts[%d].id: must not be empty", i)
		}
	}
	for i, id := range ch.DeletedIDs {
		if id == "" {
			return fmt.Errorf("deleted_ids[%d]: must not be empty", i)
		}
	}
	return validateFederated(ch)
}

// clearEntries drops every entry; an SVID whose entry is re-sent in the
// same change survives, so a snapshot does not force every SVID to be
// minted again.
func clearEntries(tx *bbolt.Tx) error {
	if err := tx.DeleteBucket(bucketEntries); err != nil {
		return fmt.Errorf("drop entries: %w", err)
	}
	if _, err := tx.CreateBucket(bucketEntries); err != nil {
		return fmt.Errorf("create entries: %w", err)
	}
	return nil
}

func writeMeta(meta *bbolt.Bucket, ch Change) error {
	if ch.Revision != 0 {
		if err := meta.Put(metaRevision, encodeInt64(ch.Revision)); err != nil {
			return fmt.Errorf("store revision: %w", err)
		}
	}
	if ch.Bundle != nil {
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(ch.Bundle)
		if err != nil {
			return fmt.Errorf("encode bundle: %w", err)
		}
		if err := meta.Put(metaBundle, v); err != nil {
			return fmt.Errorf("store bundle: %w", err)
		}
	}
	return nil
}

func corrupt(bucket string, key []byte, err error) error {
	return fmt.Errorf("%s/%q: %w: %w", bucket, key, ErrCorrupt, err)
}

func encodeInt64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func decodeInt64(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("counter is %d bytes, want 8", len(b))
	}
	v := int64(binary.BigEndian.Uint64(b))
	if v < 0 {
		return 0, errors.New("counter is negative")
	}
	return v, nil
}
