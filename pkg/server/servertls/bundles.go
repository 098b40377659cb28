// Package servertls owns nhid-server's side of the agent API's TLS: the
// server's own X.509-SVID (a fresh key, renewed at half life) and the
// verification of agent certificates against the current trust bundle as
// the store holds it, read at every handshake so that a rotated or removed
// authority takes effect without a restart.
package servertls

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// BundleGetter reads the trust bundle; pkg/store/bolt's *Store satisfies it.
type BundleGetter interface {
	GetBundle(ctx context.Context, trustDomain string) (*typesv1.Bundle, error)
}

// Bundles is the trust domain's current bundle, read from the store on
// every call and parsed once per bundle sequence number. It is safe for
// concurrent use.
type Bundles struct {
	getter BundleGetter
	td     spiffeid.TrustDomain
	clock  clock.Clock

	mu     sync.Mutex
	seq    uint64
	loaded bool
	proto  *typesv1.Bundle
	x509   *x509bundle.Bundle
}

// NewBundles returns a reader of td's bundle in getter. A nil clk is the
// wall clock; it decides certificate validity in VerifyX509SVID.
func NewBundles(getter BundleGetter, td spiffeid.TrustDomain, clk clock.Clock) *Bundles {
	return &Bundles{getter: getter, td: td, clock: clock.OrReal(clk)}
}

// TrustDomain is the trust domain whose bundle this is.
func (b *Bundles) TrustDomain() spiffeid.TrustDomain { return b.td }

// Current returns the stored bundle and its X.509 authorities. Both are
// shared between callers and must not be modified. A trust domain without
// a stored bundle yields an empty one, against which nothing verifies.
func (b *Bundles) Current(ctx context.Context) (*typesv1.Bundle, *x509bundle.Bundle, error) {
	pb, err := b.getter.GetBundle(ctx, b.td.Name())
	switch {
	case errors.Is(err, store.ErrNotFound):
		pb = &typesv1.Bundle{TrustDomain: b.td.Name()}
	case err != nil:
		return nil, nil, fmt.Errorf("read trust bundle: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.loaded && b.seq == pb.GetSequenceNumber() {
		return b.proto, b.x509, nil
	}
	certs := make([]*x509.Certificate, 0, len(pb.GetX509Authorities()))
	for i, a := range pb.GetX509Authorities() {
		cert, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return nil, nil, fmt.Errorf("trust bundle: x509_authorities[%d]: %w", i, err)
		}
		certs = append(certs, cert)
	}
	b.seq, b.loaded, b.proto = pb.GetSequenceNumber(), true, pb
	b.x509 = x509bundle.FromX509Authorities(b.td, certs)
	return b.proto, b.x509, nil
}

// VerifyX509SVID checks that certs (leaf first, as presented by a peer) is
// an X.509-SVID chaining to a current authority of the trust domain, and
// returns its SPIFFE ID.
func (b *Bundles) VerifyX509SVID(ctx context.Context, certs []*x509.Certificate) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, errors.New("no certificate presented")
	}
	_, bundle, err := b.Current(ctx)
	if err != nil {
		return spiffeid.ID{}, err
	}
	id, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(b.clock.Now()))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("verify X.509-SVID: %w", err)
	}
	return id, nil
}

// verifyTimeout bounds the store read behind a handshake's verification,
// which has no context of its own.
const verifyTimeout = 5 * time.Second
