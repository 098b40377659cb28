package workloadapi

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// trustBundles are an Update's bundles by trust domain. The agent's own
// bundle wins over a federated one claiming the same trust domain: a
// federation relationship must never replace our own roots.
type trustBundles struct {
	own       *spiffebundle.Bundle
	byTD      map[spiffeid.TrustDomain]*spiffebundle.Bundle
	federated []*spiffebundle.Bundle // in Update order, own trust domain excluded
}

func indexBundles(u *Update) trustBundles {
	tb := trustBundles{own: u.Bundle, byTD: make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, 1+len(u.FederatedBundles))}
	if u.Bundle != nil {
		tb.byTD[u.Bundle.TrustDomain()] = u.Bundle
	}
	for _, b := range u.FederatedBundles {
		if b == nil {
			continue
		}
		if _, dup := tb.byTD[b.TrustDomain()]; dup {
			continue
		}
		tb.byTD[b.TrustDomain()] = b
		tb.federated = append(tb.federated, b)
	}
	return tb
}

// source is a bundle source over all the trust domains, for validation.
func (tb trustBundles) source() *spiffebundle.Set {
	set := spiffebundle.NewSet()
	for _, b := range tb.byTD {
		set.Add(b)
	}
	return set
}

// x509Bundles maps trust domain IDs ("spiffe://example.org") to their
// concatenated DER X.509 authorities: the own trust domain always, others
// when they have any.
func (tb trustBundles) x509Bundles(includeOwn bool) map[string][]byte {
	out := make(map[string][]byte, 1+len(tb.federated))
	if includeOwn && tb.own != nil {
		out[tb.own.TrustDomain().IDString()] = concatDER(tb.own.X509Authorities())
	}
	for _, b := range tb.federated {
		if auths := b.X509Authorities(); len(auths) > 0 {
			out[b.TrustDomain().IDString()] = concatDER(auths)
		}
	}
	return out
}

// jwtBundles maps trust domain IDs to JWKS documents: the own trust domain
// always, others when they have JWT authorities.
func (tb trustBundles) jwtBundles() (map[string][]byte, error) {
	out := make(map[string][]byte, 1+len(tb.federated))
	add := func(b *spiffebundle.Bundle, always bool) error {
		auths := b.JWTAuthorities()
		if len(auths) == 0 && !always {
			return nil
		}
		jwks, err := marshalJWKS(auths)
		if err != nil {
			return fmt.Errorf("JWT bundle of %s: %w", b.TrustDomain(), err)
		}
		out[b.TrustDomain().IDString()] = jwks
		return nil
	}
	if tb.own != nil {
		if err := add(tb.own, true); err != nil {
			return nil, err
		}
	}
	for _, b := range tb.federated {
		if err := add(b, false); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// marshalJWKS writes a standard RFC 7517 JWK Set, as go-spiffe's
// jwtbundle.Bundle.Marshal does, but ordered by key id: the bytes must not
// change while the keys do not, or every stream would resend them.
func marshalJWKS(auths map[string]crypto.PublicKey) ([]byte, error) {
	kids := make([]string, 0, len(auths))
	for kid := range auths {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(kids))}
	for _, kid := range kids {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: auths[kid], KeyID: kid})
	}
	return json.Marshal(set)
}

func concatDER(certs []*x509.Certificate) []byte {
	n := 0
	for _, c := range certs {
		n += len(c.Raw)
	}
	out := make([]byte, 0, n)
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
