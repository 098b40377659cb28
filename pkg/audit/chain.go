// Package audit owns the audit trail's contract and format: the events
// components record (Event, Recorder), the hash chain that links records
// (RecordHash), the signed checkpoints over it (SignCheckpoint), the JSON
// lines tools and SIEMs read (MarshalLine), and the verification anyone can
// run on what the server returns (Verifier). docs/audit.md specifies the
// encodings byte by byte. The writer that appends to the store is
// pkg/audit/auditlog; this package has no store or server dependency, so
// nhidctl verifies with the same code.
package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// HashSize is the size of record hashes: SHA-256.
const HashSize = sha256.Size

// Domain separation tags: the first bytes hashed, so that a record's
// encoding can never be mistaken for a checkpoint's, or for a later
// version's.
const (
	recordTag     = "nhid.audit.record.v1\x00"
	checkpointTag = "nhid.audit.checkpoint.v1\x00"
)

// ZeroHash returns the prev_hash of record 1: 32 zero bytes.
func ZeroHash() []byte { return make([]byte, HashSize) }

// RecordHash returns SHA-256 over r's canonical encoding: the tag
// "nhid.audit.record.v1" and a zero byte, then every field but hash in
// field-number order — seq (8 bytes big endian), time (8 bytes big endian,
// two's complement), actor, on_behalf_of, action, target, outcome, reason,
// details, prev_hash, server — each string or bytes field as its length
// (4 bytes big endian) and its bytes.
func RecordHash(r *typesv1.AuditRecord) []byte {
	return newHasher().record(r)
}

// hasher computes record hashes reusing one SHA-256 state and buffer.
type hasher struct {
	h   hash.Hash
	buf []byte
}

func newHasher() *hasher { return &hasher{h: sha256.New(), buf: make([]byte, 0, 512)} }

func (x *hasher) record(r *typesv1.AuditRecord) []byte {
	b := append(x.buf[:0], recordTag...)
	b = binary.BigEndian.AppendUint64(b, r.GetSeq())
	b = binary.BigEndian.AppendUint64(b, uint64(r.GetTime()))
	for _, s := range []string{r.GetActor(), r.GetOnBehalfOf(), r.GetAction(), r.GetTarget(), r.GetOutcome(), r.GetReason(), r.GetDetails()} {
		b = appendField(b, s)
	}
	b = appendField(b, r.GetPrevHash())
	b = appendField(b, r.GetServer())
	x.buf = b[:0]
	x.h.Reset()
	x.h.Write(b)
	return x.h.Sum(nil)
}

// appendField appends a length-prefixed string or byte field.
func appendField[T string | []byte](b []byte, v T) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// Chain links records: it hands out seqs and prev hashes and computes the
// hashes, continuing from a head. The zero value is not usable; see
// NewChain.
type Chain struct {
	seq  uint64
	prev []byte
	x    *hasher
}

// NewChain continues the chain whose newest record is seq with hash
// headHash (seq 0 and any hash for an empty log).
func NewChain(seq uint64, headHash []byte) *Chain {
	prev := headHash
	if seq == 0 {
		prev = ZeroHash()
	}
	return &Chain{seq: seq, prev: prev, x: newHasher()}
}

// Link sets r's seq and prev_hash to the next in the chain and its hash.
func (c *Chain) Link(r *typesv1.AuditRecord) {
	c.seq++
	r.Seq, r.PrevHash = c.seq, c.prev
	r.Hash = c.x.record(r)
	c.prev = r.Hash
}

// Head is the seq and hash of the last linked record.
func (c *Chain) Head() (uint64, []byte) { return c.seq, c.prev }
