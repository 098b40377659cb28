package workloadapi

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// FetchX509SVID streams the caller's X.509-SVIDs with their bundles, the
// full state in every message, a new message whenever it changes. A caller
// entitled to nothing, at first or later, gets PermissionDenied.
func (h *Handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) (err error) {
	c := h.begin(stream.Context(), methodFetchX509SVID, true)
	defer func() { err = c.end(err) }()
	if err := c.attest(); err != nil {
		return err
	}
	b := &x509SVIDBuilder{log: c.log, keys: h.keys}
	return follow(c, b.build, func(resp *workload.X509SVIDResponse) error {
		if err := stream.Send(resp); err != nil {
			return err
		}
		h.metrics.svids.WithLabelValues(kindX509).Add(float64(len(resp.Svids)))
		return nil
	})
}

// FetchX509Bundles streams the X.509 bundles of the agent's trust domain
// and of the federated ones, to a caller entitled to at least one identity.
func (h *Handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) (err error) {
	c := h.begin(stream.Context(), methodFetchX509Bundles, true)
	defer func() { err = c.end(err) }()
	if err := c.attest(); err != nil {
		return err
	}
	return follow(c, x509BundlesResponse, stream.Send)
}

func x509BundlesResponse(u *Update) (*workload.X509BundlesResponse, error) {
	if u == nil || len(u.Identities) == 0 {
		return nil, errNoIdentity
	}
	if u.Bundle == nil {
		return nil, errNoBundle
	}
	return &workload.X509BundlesResponse{Bundles: indexBundles(u).x509Bundles(true)}, nil
}

// errNoBundle answers while the agent has identities but no trust bundle:
// it is not ready, and the client should retry.
var errNoBundle = &StatusError{Code: codes.Unavailable, Msg: "trust bundle not available yet"}

// x509SVIDBuilder turns Updates into X509SVIDResponses for one stream,
// remembering what it logged so a stream warns once per distinct problem.
type x509SVIDBuilder struct {
	log      *slog.Logger
	keys     *keyCache
	problems onceLog
	hints    onceLog
}

func (b *x509SVIDBuilder) build(u *Update) (*workload.X509SVIDResponse, error) {
	if u == nil || len(u.Identities) == 0 {
		return nil, errNoIdentity
	}
	tb := indexBundles(u)
	resp := &workload.X509SVIDResponse{}
	var (
		problems []error
		hints    hintSet
	)
	for _, id := range u.Identities {
		svid, err := x509SVID(id, tb, b.keys)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		if hints.add(svid.Hint, svid.SpiffeId) {
			resp.Svids = append(resp.Svids, svid)
		}
	}
	if b.problems.changed(errorStrings(problems)) {
		b.log.Error("identities left out of X.509-SVID response", telemetry.Error, errors.Join(problems...))
	}
	if b.hints.changed(hints.dropped()) {
		hints.logDropped(b.log)
	}
	if len(resp.Svids) == 0 {
		// The reasons were just logged, once for this stream.
		return nil, &StatusError{Code: codes.Unavailable, Msg: "identities not ready"}
	}
	resp.FederatedBundles = tb.x509Bundles(false)
	return resp, nil
}

// x509SVID converts one identity. It refuses rather than send an SVID the
// client would reject: go-spiffe drops the whole response if one SVID's key
// does not match its certificate.
func x509SVID(id Identity, tb trustBundles, keys *keyCache) (*workload.X509SVID, error) {
	entryID := id.Entry.GetId()
	if len(id.Certificates) == 0 || slices.Contains(id.Certificates, nil) {
		return nil, fmt.Errorf("entry %s: no certificate chain", entryID)
	}
	leaf := id.Certificates[0]
	spiffeID, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("entry %s: %w", entryID, err)
	}
	if id.PrivateKey == nil {
		return nil, fmt.Errorf("entry %s: no private key", entryID)
	}
	pub, ok := id.PrivateKey.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("entry %s: private key does not match certificate %x", entryID, leaf.SerialNumber)
	}
	key, err := keys.pkcs8(leaf, id.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("entry %s: encode private key: %w", entryID, err)
	}
	bundle, ok := tb.byTD[spiffeID.TrustDomain()]
	if !ok {
		return nil, fmt.Errorf("entry %s: no bundle for trust domain %s", entryID, spiffeID.TrustDomain())
	}
	auths := bundle.X509Authorities()
	if len(auths) == 0 {
		return nil, fmt.Errorf("entry %s: bundle of %s has no X.509 authorities", entryID, spiffeID.TrustDomain())
	}
	return &workload.X509SVID{
		SpiffeId:    spiffeID.String(),
		X509Svid:    concatDER(id.Certificates),
		X509SvidKey: key,
		Bundle:      concatDER(auths),
		Hint:        id.Entry.GetHint(),
	}, nil
}

func errorStrings(errs []error) []string {
	out := make([]string, len(errs))
	for i, err := range errs {
		out[i] = err.Error()
	}
	return out
}
