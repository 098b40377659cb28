package relyingparty

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"

	"github.com/nhid/nhid/pkg/server/servertls"
	"github.com/nhid/nhid/pkg/telemetry"
)

// keySet is the JWT authorities of one bundle version: the keys by id and
// their JWKS document.
type keySet struct {
	keys map[string]crypto.PublicKey
	jwks []byte
}

// keyCache holds the keySet of the bundle's current sequence number; the
// bundle is read from the store on every call, parsed only when it changed.
type keyCache struct {
	bundles *servertls.Bundles

	mu     sync.Mutex
	seq    uint64
	loaded bool
	set    *keySet
}

func newKeyCache(b *servertls.Bundles) *keyCache { return &keyCache{bundles: b} }

// current returns the JWT authorities as the store holds them now.
func (c *keyCache) current(ctx context.Context) (*keySet, error) {
	pb, _, err := c.bundles.Current(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded && c.seq == pb.GetSequenceNumber() {
		return c.set, nil
	}
	jb := jwtbundle.New(c.bundles.TrustDomain())
	keys := make(map[string]crypto.PublicKey, len(pb.GetJwtAuthorities()))
	for i, a := range pb.GetJwtAuthorities() {
		pub, err := x509.ParsePKIXPublicKey(a.GetPublicKey())
		if err != nil {
			return nil, fmt.Errorf("trust bundle: jwt_authorities[%d] (key id %q): %w", i, a.GetKeyId(), err)
		}
		if err := jb.AddJWTAuthority(a.GetKeyId(), pub); err != nil {
			return nil, fmt.Errorf("trust bundle: jwt_authorities[%d]: %w", i, err)
		}
		keys[a.GetKeyId()] = pub
	}
	doc, err := jb.Marshal()
	if err != nil {
		return nil, fmt.Errorf("trust bundle: marshal JWKS: %w", err)
	}
	c.seq, c.loaded, c.set = pb.GetSequenceNumber(), true, &keySet{keys: keys, jwks: doc}
	return c.set, nil
}

// jwks answers GET /jwks with the trust domain's JWT keys as an RFC 7517
// JWKS document.
func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.client(w, r); !ok {
		return
	}
	set, err := s.keys.current(r.Context())
	if err != nil {
		s.log.Error("read JWT keys", telemetry.Error, err.Error())
		writeError(w, http.StatusInternalServerError, "server_error", "the trust bundle could not be read")
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(set.jwks)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(set.jwks)
	}
}
