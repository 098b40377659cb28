package manager

import (
	"container/list"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nhid/nhid/pkg/agent/keys"
	"github.com/nhid/nhid/pkg/selector"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// record is the manager's state for one cached entry. Guarded by Manager.mu.
type record struct {
	entry  *typesv1.Entry
	sels   selector.Set
	digest []byte // entryDigest(entry)
	// served is false for entries never given to workloads: node aliases,
	// expired entries, entries without selectors.
	served bool
	svid   *svid
	// lru is the record's place in Manager.lru while it holds an SVID.
	lru *list.Element
	// idxKey and idxPos locate the record in Manager.index (idxKey "" when
	// not indexed).
	idxKey string
	idxPos int
	// pins counts open subscriptions that match the record: a pinned SVID
	// is never dropped to honour the pre-mint bound.
	pins int
	// idle is the record's place in Manager.idle while its SVID keeps a
	// parsed form that no subscription pins.
	idle *list.Element
	// demand is set when a workload needs the record's SVID and none is
	// held; it is cleared by the next mint attempt, whatever its outcome.
	demand  bool
	minting bool
	// retryAt and failures back off minting after the server refused it.
	retryAt  time.Time
	failures int
}

// svid is an X.509-SVID held for a record. It is immutable once built,
// except for the lazily parsed form.
type svid struct {
	chain     [][]byte // DER, leaf first
	key       []byte   // PKCS#8
	digest    []byte   // the entry digest it was minted for
	notBefore time.Time
	notAfter  time.Time
	rotateAt  time.Time
	// seq tells SVIDs apart in Update keys; set when installed.
	seq uint64
	// parsed is built when the SVID is first served. Once no subscription
	// holds it, it stays among the manager's most recently served idle
	// SVIDs (maxIdleParsed) and is dropped beyond them: parsed
	// certificates cost several times their DER and most pre-minted SVIDs
	// are never served, but a workload that connects anew for every fetch
	// must not pay for parsing the chain and key (an EC scalar
	// multiplication) every time.
	parsed *parsedSVID
}

type parsedSVID struct {
	certs []*x509.Certificate
	key   crypto.Signer
}

// newSVID checks a chain and key and computes the rotation point at about
// half the SVID's life, jittered so that SVIDs minted together do not all
// rotate at once.
func newSVID(chain [][]byte, key []byte, digest []byte) (*svid, *parsedSVID, error) {
	p, err := parseSVID(chain, key)
	if err != nil {
		return nil, nil, err
	}
	leaf := p.certs[0]
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	frac := 0.45 + 0.1*rand.Float64()
	s := &svid{
		chain:     chain,
		key:       key,
		digest:    digest,
		notBefore: leaf.NotBefore,
		notAfter:  leaf.NotAfter,
		rotateAt:  leaf.NotBefore.Add(time.Duration(float64(life) * frac)),
	}
	return s, p, nil
}

func parseSVID(chain [][]byte, keyDER []byte) (*parsedSVID, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("svid_chain: empty")
	}
	certs := make([]*x509.Certificate, 0, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("svid_chain[%d]: %w", i, err)
		}
		certs = append(certs, c)
	}
	key, err := keys.ParsePKCS8(keyDER)
	if err != nil {
		return nil, err
	}
	if !keys.Matches(key, certs[0].PublicKey) {
		return nil, fmt.Errorf("svid_chain[0]: public key does not match the private key")
	}
	return &parsedSVID{certs: certs, key: key}, nil
}

// entryDigest identifies the parts of an entry an X.509-SVID embodies: when
// it changes, the SVID no longer describes the entry and is minted again.
// Selectors, hint and revision are not among them.
func entryDigest(e *typesv1.Entry) []byte {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(e.GetSpiffeId())
	field(e.GetPurpose())
	field(e.GetOwner())
	field(fmt.Sprint(e.GetX509Ttl()))
	for _, d := range e.GetDnsNames() {
		field(d)
	}
	return h.Sum(nil)[:16]
}

// index finds the entries a workload's selectors match. Each entry is
// indexed under one of its selectors only (the first): an entry matches
// only workloads having all its selectors, so that one is enough to find
// it, and memory stays at one slot per entry.
type index map[string][]*record

func (ix index) add(r *record) {
	items := r.sels.Strings()
	if len(items) == 0 {
		return
	}
	r.idxKey = items[0]
	r.idxPos = len(ix[r.idxKey])
	ix[r.idxKey] = append(ix[r.idxKey], r)
}

func (ix index) remove(r *record) {
	if r.idxKey == "" {
		return
	}
	s := ix[r.idxKey]
	last := len(s) - 1
	s[r.idxPos] = s[last]
	s[r.idxPos].idxPos = r.idxPos
	s[last] = nil
	if last == 0 {
		delete(ix, r.idxKey)
	} else {
		ix[r.idxKey] = s[:last]
	}
	r.idxKey, r.idxPos = "", 0
}

// match returns the served records whose selectors are all in sels.
func (ix index) match(sels selector.Set) []*record {
	var out []*record
	for _, s := range sels.Strings() {
		for _, r := range ix[s] {
			if r.served && sels.Includes(r.sels) {
				out = append(out, r)
			}
		}
	}
	return out
}
