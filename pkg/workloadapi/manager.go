package workloadapi

import (
	"context"
	"crypto"
	"crypto/x509"

	"github.com/nhid/nhid/pkg/selector"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

// Identity is one SVID a workload may receive.
type Identity struct {
	// Entry is the registration entry the SVID was minted for. Read only.
	Entry *typesv1.Entry
	// Certificates is the X.509-SVID chain, leaf first.
	Certificates []*x509.Certificate
	// PrivateKey is the SVID's key; it never leaves the agent process
	// except to the workload entitled to it.
	PrivateKey crypto.Signer
}

// Update is the full state for one set of workload selectors.
type Update struct {
	// Identities are the SVIDs whose entries the selectors match, ordered by
	// entry id. Entries without a ready SVID are left out.
	Identities []Identity
	// Bundle is the agent's own trust domain bundle (X.509 and JWT authorities).
	Bundle *spiffebundle.Bundle
	// FederatedBundles are other trust domains' bundles, if any.
	FederatedBundles []*spiffebundle.Bundle
}

// Subscription delivers Updates for one set of selectors.
type Subscription interface {
	// Updates yields the current state at once, then a new Update after
	// every change that affects it (rotation, entry change, bundle change).
	// Only the newest undelivered Update is kept: a slow reader skips
	// intermediate states, never the latest one.
	Updates() <-chan *Update
	// Close ends the subscription and closes the Updates channel.
	Close()
}

// Manager is what the Workload API handler needs from the agent's cache.
type Manager interface {
	// Subscribe follows the identities matching sels.
	Subscribe(sels selector.Set) Subscription
	// Current returns the state for sels now, without subscribing.
	Current(sels selector.Set) *Update
	// FetchJWTSVID returns a JWT-SVID for the identity's entry and audience.
	FetchJWTSVID(ctx context.Context, entry *typesv1.Entry, audience []string) (string, error)
}

// Attestor finds the selectors of a calling process by pid.
type Attestor interface {
	Attest(ctx context.Context, pid int32) (selector.Set, error)
}
