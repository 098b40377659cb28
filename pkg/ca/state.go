package ca

import (
	"crypto"
	"crypto/x509"
	"time"

	"github.com/nhid/nhid/pkg/svid"
)

// status is where a key is in its rotation life.
type status string

const (
	// statusNext: created and published in the bundle; not signing yet.
	statusNext status = "next"
	// statusActive: the key that signs. At most one per kind.
	statusActive status = "active"
	// statusRetired: no longer signs; its private key is deleted, and it
	// stays published until it expires.
	statusRetired status = "retired"
)

// slot is one X.509 CA or one JWT key. Slots are values: a rotation step
// works on copies and swaps them in only once they are persisted.
type slot struct {
	id          string // x509: the serial in hex; jwt: the key id
	status      status
	notBefore   time.Time
	notAfter    time.Time
	publishedAt time.Time
	key         crypto.Signer // nil once retired
	keyFile     string        // "" once retired

	// X.509 CA only.
	cert  *x509.Certificate
	chain []*x509.Certificate // upstream intermediates sent after cert

	// JWT key only.
	pub    crypto.PublicKey
	pubDER []byte
	signer *svid.JWTSigner // nil once retired
}

// live reports whether the slot is still within its validity at now.
func (s *slot) live(now time.Time) bool { return now.Before(s.notAfter) }

func (s *slot) life() time.Duration { return s.notAfter.Sub(s.notBefore) }

// prepareAt is when the successor of an active slot is created.
func (s *slot) prepareAt() time.Time { return s.notBefore.Add(s.life() / 2) }

// activateAt is when next replaces active: at 5/6 of active's life, but not
// before next has been published for 1/12 of that life, so that after an
// outage agents still get a moment to learn the new anchor; and never after
// active expires.
func activateAt(active, next *slot) time.Time {
	t := active.notBefore.Add(active.life() / 6 * 5)
	if g := next.publishedAt.Add(active.life() / 12); g.After(t) {
		t = g
	}
	if t.After(active.notAfter) {
		t = active.notAfter
	}
	return t
}

// state is the CA's rotation state: the X.509 CAs and JWT keys it holds and
// the X.509 trust anchors it has published.
type state struct {
	x509    []slot
	jwt     []slot
	anchors []*x509.Certificate
}

func (s state) clone() state {
	return state{
		x509:    append([]slot(nil), s.x509...),
		jwt:     append([]slot(nil), s.jwt...),
		anchors: append([]*x509.Certificate(nil), s.anchors...),
	}
}

// find returns the slot with status st, or nil.
func find(slots []slot, st status) *slot {
	for i := range slots {
		if slots[i].status == st {
			return &slots[i]
		}
	}
	return nil
}

// hasAnchor reports whether cert is among anchors, comparing DER.
func hasAnchor(anchors []*x509.Certificate, cert *x509.Certificate) bool {
	for _, a := range anchors {
		if a.Equal(cert) {
			return true
		}
	}
	return false
}
