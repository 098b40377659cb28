package ca

import (
	"crypto"
	"crypto/x509"
	"time"

	"github.com/nhid/nhid/pkg/svid"
)

// view is an immutable snapshot of what signing and the accessors need,
// swapped in atomically after every committed state change.
type view struct {
	x509 *x509Signer // nil when no X.509 CA is active
	jwt  *jwtSigner  // nil when no JWT key is active

	x509Authorities []*x509.Certificate
	jwtAuthorities  map[string]crypto.PublicKey
}

type x509Signer struct {
	cert *x509.Certificate
	key  crypto.Signer
	// tail is what follows the leaf in an SVID chain: nothing for a
	// self-signed CA (the bundle holds it), else cert and the upstream
	// intermediates.
	tail      []*x509.Certificate
	notBefore time.Time
	notAfter  time.Time
}

type jwtSigner struct {
	kid      string
	signer   *svid.JWTSigner
	notAfter time.Time
}

// setView publishes a snapshot of c.state. Called with c.mu held.
func (c *CA) setView() {
	v := &view{
		x509Authorities: append([]*x509.Certificate(nil), c.state.anchors...),
		jwtAuthorities:  make(map[string]crypto.PublicKey, len(c.state.jwt)),
	}
	if s := find(c.state.x509, statusActive); s != nil {
		v.x509 = &x509Signer{cert: s.cert, key: s.key, notBefore: s.notBefore, notAfter: s.notAfter}
		if !isSelfSigned(s.cert) {
			v.x509.tail = append([]*x509.Certificate{s.cert}, s.chain...)
		}
		c.metrics.expiry.WithLabelValues(kindX509).Set(float64(s.notAfter.Unix()))
	}
	if s := find(c.state.jwt, statusActive); s != nil {
		v.jwt = &jwtSigner{kid: s.id, signer: s.signer, notAfter: s.notAfter}
		c.metrics.expiry.WithLabelValues(kindJWT).Set(float64(s.notAfter.Unix()))
	}
	for _, s := range c.state.jwt {
		v.jwtAuthorities[s.id] = s.pub
	}
	c.view.Store(v)
}
