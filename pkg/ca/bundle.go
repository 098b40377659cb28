package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// errNoChange aborts a bundle transaction that would change nothing, so
// that an idle rotation step does not bump the bundle's sequence number
// and wake every agent.
var errNoChange = errors.New("bundle already up to date")

// publish makes the store's bundle hold every live authority of this CA and
// none of its expired ones. Authorities of other servers are left alone:
// X.509 authorities are matched by DER, JWT authorities by key id and key.
func (c *CA) publish(ctx context.Context, now time.Time) error {
	var addX509, delX509 []*x509.Certificate
	for _, a := range c.state.anchors {
		if now.Before(a.NotAfter) {
			addX509 = append(addX509, a)
		} else {
			delX509 = append(delX509, a)
		}
	}
	var addJWT, delJWT []*typesv1.JWTAuthority
	for _, s := range c.state.jwt {
		ja := &typesv1.JWTAuthority{KeyId: s.id, PublicKey: s.pubDER, ExpiresAt: s.notAfter.Unix()}
		if s.live(now) {
			addJWT = append(addJWT, ja)
		} else {
			delJWT = append(delJWT, ja)
		}
	}
	_, err := c.cfg.Bundles.UpdateBundle(ctx, c.td.Name(), func(b *typesv1.Bundle) error {
		changed := editX509(b, addX509, delX509)
		jwtChanged, err := editJWT(b, addJWT, delJWT)
		if err != nil {
			return err
		}
		if !changed && !jwtChanged {
			return errNoChange
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return fmt.Errorf("publish CA authorities in the %s bundle: %w", c.td.Name(), err)
	}
	return nil
}

func editX509(b *typesv1.Bundle, add, del []*x509.Certificate) bool {
	changed := false
	kept := b.X509Authorities[:0:0]
	for _, xa := range b.X509Authorities {
		if containsDER(del, xa.GetAsn1()) {
			changed = true
			continue
		}
		kept = append(kept, xa)
	}
	for _, cert := range add {
		if !hasX509(kept, cert.Raw) {
			kept = append(kept, &typesv1.X509Authority{Asn1: cert.Raw})
			changed = true
		}
	}
	b.X509Authorities = kept
	return changed
}

func editJWT(b *typesv1.Bundle, add, del []*typesv1.JWTAuthority) (bool, error) {
	changed := false
	kept := b.JwtAuthorities[:0:0]
	for _, ja := range b.JwtAuthorities {
		if findJWT(del, ja.GetKeyId(), ja.GetPublicKey()) != nil {
			changed = true
			continue
		}
		kept = append(kept, ja)
	}
	for _, want := range add {
		have := findJWT(kept, want.GetKeyId(), nil)
		switch {
		case have == nil:
			kept = append(kept, want)
			changed = true
		case !bytes.Equal(have.GetPublicKey(), want.GetPublicKey()):
			return false, fmt.Errorf("bundle holds JWT key id %s with a different public key", want.GetKeyId())
		case have.GetExpiresAt() != want.GetExpiresAt():
			have.ExpiresAt = want.GetExpiresAt()
			changed = true
		}
	}
	b.JwtAuthorities = kept
	return changed, nil
}

// findJWT returns the authority with kid (and public key, if pub is not
// nil) from list, or nil.
func findJWT(list []*typesv1.JWTAuthority, kid string, pub []byte) *typesv1.JWTAuthority {
	for _, ja := range list {
		if ja.GetKeyId() == kid && (pub == nil || bytes.Equal(ja.GetPublicKey(), pub)) {
			return ja
		}
	}
	return nil
}

func containsDER(certs []*x509.Certificate, der []byte) bool {
	for _, c := range certs {
		if bytes.Equal(c.Raw, der) {
			return true
		}
	}
	return false
}

func hasX509(list []*typesv1.X509Authority, der []byte) bool {
	for _, xa := range list {
		if bytes.Equal(xa.GetAsn1(), der) {
			return true
		}
	}
	return false
}
