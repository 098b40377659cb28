package agentcache

import (
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// SVID is an X.509-SVID minted for one entry, with its private key.
type SVID struct {
	// EntryID is the entry the SVID was minted for.
	EntryID string
	// CertChain is the certificate chain, leaf first, ASN.1 DER.
	CertChain [][]byte
	// PrivateKey is the SVID's key, PKCS#8 DER.
	PrivateKey []byte
	// EntryDigest identifies the entry content the SVID was minted for. The
	// cache does not interpret it.
	EntryDigest []byte
}

// svidRecordVersion is the first byte of every svid record; the rest is
// protobuf wire format (fields below). Decoding is strict, unknown fields
// included, to catch damaged records: a new field needs a new version.
const svidRecordVersion = 1

const (
	fieldCert   protowire.Number = 1 // repeated bytes
	fieldKey    protowire.Number = 2 // bytes
	fieldDigest protowire.Number = 3 // bytes
)

// PutSVIDs stores SVIDs in one transaction, replacing those of the same
// entries. An SVID whose entry is no longer cached (deleted while it was
// being minted) is not stored: it would never be served. PutSVIDs returns
// how many were stored.
func (c *Cache) PutSVIDs(svids []SVID) (int, error) {
	for i, s := range svids {
		if err := s.validate(); err != nil {
			return 0, fmt.Errorf("agent cache put svids: svids[%d]: %w", i, err)
		}
	}
	stored := 0
	err := c.update("put svids", func(tx *bbolt.Tx) error {
		stored = 0
		entries, b := tx.Bucket(bucketEntries), tx.Bucket(bucketSVIDs)
		for _, s := range svids {
			if entries.Get([]byte(s.EntryID)) == nil {
				continue
			}
			if err := b.Put([]byte(s.EntryID), encodeSVID(s)); err != nil {
				return fmt.Errorf("store svid of entry %q: %w", s.EntryID, err)
			}
			stored++
		}
		return nil
	})
	return stored, err
}

// DeleteSVIDs removes the SVIDs of the given entries; unknown ids are ignored.
func (c *Cache) DeleteSVIDs(entryIDs []string) error {
	return c.update("delete svids", func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSVIDs)
		for _, id := range entryIDs {
			if err := b.Delete([]byte(id)); err != nil {
				return fmt.Errorf("delete svid of entry %q: %w", id, err)
			}
		}
		return nil
	})
}

func (s SVID) validate() error {
	switch {
	case s.EntryID == "":
		return errors.New("entry_id: must not be empty")
	case len(s.CertChain) == 0:
		return errors.New("cert_chain: must hold the leaf certificate")
	case len(s.PrivateKey) == 0:
		return errors.New("private_key: must not be empty")
	}
	for i, c := range s.CertChain {
		if len(c) == 0 {
			return fmt.Errorf("cert_chain[%d]: must not be empty", i)
		}
	}
	return nil
}

func encodeSVID(s SVID) []byte {
	n := 1 + protowire.SizeTag(fieldKey) + protowire.SizeBytes(len(s.PrivateKey)) +
		protowire.SizeTag(fieldDigest) + protowire.SizeBytes(len(s.EntryDigest))
	for _, c := range s.CertChain {
		n += protowire.SizeTag(fieldCert) + protowire.SizeBytes(len(c))
	}
	b := make([]byte, 0, n)
	b = append(b, svidRecordVersion)
	for _, c := range s.CertChain {
		b = protowire.AppendTag(b, fieldCert, protowire.BytesType)
		b = protowire.AppendBytes(b, c)
	}
	b = protowire.AppendTag(b, fieldKey, protowire.BytesType)
	b = protowire.AppendBytes(b, s.PrivateKey)
	b = protowire.AppendTag(b, fieldDigest, protowire.BytesType)
	return protowire.AppendBytes(b, s.EntryDigest)
}

// decodeSVID copies what it keeps: bbolt's values are only valid inside
// their transaction.
func decodeSVID(entryID string, v []byte) (SVID, error) {
	if len(v) == 0 || v[0] != svidRecordVersion {
		return SVID{}, errors.New("unknown svid record version")
	}
	s := SVID{EntryID: entryID}
	for b := v[1:]; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return SVID{}, fmt.Errorf("read field tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType {
			return SVID{}, fmt.Errorf("field %d has wire type %d, want bytes", num, typ)
		}
		val, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return SVID{}, fmt.Errorf("read field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		val = append([]byte(nil), val...)
		switch num {
		case fieldCert:
			s.CertChain = append(s.CertChain, val)
		case fieldKey:
			s.PrivateKey = val
		case fieldDigest:
			s.EntryDigest = val
		default:
			return SVID{}, fmt.Errorf("unknown field %d", num)
		}
	}
	if err := s.validate(); err != nil {
		return SVID{}, err
	}
	return s, nil
}
