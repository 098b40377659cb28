package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/federation"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Actions of the federated bundle changes, after audit.ActionAdminPrefix.
const (
	actionFederatedBundleSet    = "federation.bundle.set"
	actionFederatedBundleDelete = "federation.bundle.delete"
)

// FederationStatus reports the configured federation relationships as
// this server sees them; *federation.Refresher satisfies it.
type FederationStatus interface {
	Status() []federation.Status
}

type federationService struct {
	adminv1.UnimplementedFederationServiceServer
	s *Service
}

// ListFederatedBundles lists the stored bundles of other trust domains.
func (h *federationService) ListFederatedBundles(ctx context.Context, _ *adminv1.ListFederatedBundlesRequest) (*adminv1.ListFederatedBundlesResponse, error) {
	all, err := h.s.store.ListBundles(ctx)
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	out := &adminv1.ListFederatedBundlesResponse{}
	for _, b := range all {
		if b.GetTrustDomain() != h.s.td.Name() {
			out.Bundles = append(out.Bundles, b)
		}
	}
	return out, nil
}

// GetFederatedBundle returns one federated bundle and its document.
func (h *federationService) GetFederatedBundle(ctx context.Context, req *adminv1.GetFederatedBundleRequest) (*adminv1.GetFederatedBundleResponse, error) {
	td, err := h.s.federatedTrustDomain(req.GetTrustDomain())
	if err != nil {
		return nil, invalidArgument(err)
	}
	b, err := h.s.store.GetBundle(ctx, td.Name())
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	doc, err := federation.Marshal(b, 0)
	if err != nil {
		return nil, h.s.internal(ctx, "render stored federated bundle", err)
	}
	return &adminv1.GetFederatedBundleResponse{Bundle: b, Jwks: string(doc)}, nil
}

// SetFederatedBundle stores a trust domain's bundle from a SPIFFE bundle
// document, replacing its authorities and refresh hint.
func (h *federationService) SetFederatedBundle(ctx context.Context, req *adminv1.SetFederatedBundleRequest) (_ *adminv1.SetFederatedBundleResponse, retErr error) {
	ch := change{action: actionFederatedBundleSet, details: map[string]any{}}
	defer func() { h.s.audit(ctx, ch, retErr) }()
	td, err := h.s.federatedTrustDomain(req.GetTrustDomain())
	if err != nil {
		return nil, invalidArgument(err)
	}
	ch.target = td.Name()
	var parsed *typesv1.Bundle
	switch doc := req.GetBundle(); {
	case len(doc) == 0:
		err = errors.New("bundle: required: a SPIFFE bundle document")
	case len(doc) > federation.MaxDocumentSize:
		err = fmt.Errorf("bundle: %d bytes, at most %d allowed", len(doc), federation.MaxDocumentSize)
	default:
		if parsed, err = federation.Parse(td, doc); err != nil {
			err = fmt.Errorf("bundle: %w", err)
		}
	}
	if err != nil {
		return nil, invalidArgument(err)
	}
	b, err := h.s.store.UpdateBundle(ctx, td.Name(), func(b *typesv1.Bundle) error {
		b.X509Authorities, b.JwtAuthorities, b.RefreshHint = parsed.X509Authorities, parsed.JwtAuthorities, parsed.RefreshHint
		return nil
	})
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	ch.details["sequence"] = b.GetSequenceNumber()
	ch.details["x509_authorities"] = len(b.GetX509Authorities())
	ch.details["jwt_authorities"] = len(b.GetJwtAuthorities())
	ch.attrs = []slog.Attr{slog.String(telemetry.TrustDomain, td.Name()), slog.Uint64("sequence", b.GetSequenceNumber())}
	return &adminv1.SetFederatedBundleResponse{Bundle: b}, nil
}

// DeleteFederatedBundle forgets a trust domain's bundle.
func (h *federationService) DeleteFederatedBundle(ctx context.Context, req *adminv1.DeleteFederatedBundleRequest) (_ *adminv1.DeleteFederatedBundleResponse, retErr error) {
	ch := change{action: actionFederatedBundleDelete}
	defer func() { h.s.audit(ctx, ch, retErr) }()
	td, err := h.s.federatedTrustDomain(req.GetTrustDomain())
	if err != nil {
		return nil, invalidArgument(err)
	}
	ch.target = td.Name()
	if err := h.s.store.DeleteBundle(ctx, td.Name()); err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	ch.attrs = []slog.Attr{slog.String(telemetry.TrustDomain, td.Name())}
	return &adminv1.DeleteFederatedBundleResponse{}, nil
}

// ListFederationRelationships lists the configured relationships with
// this server's view of their refreshes and the stored bundle's sequence.
func (h *federationService) ListFederationRelationships(ctx context.Context, _ *adminv1.ListFederationRelationshipsRequest) (*adminv1.ListFederationRelationshipsResponse, error) {
	out := &adminv1.ListFederationRelationshipsResponse{}
	if h.s.federation == nil {
		return out, nil
	}
	for _, st := range h.s.federation.Status() {
		rel := st.Relationship
		r := &adminv1.FederationRelationship{
			TrustDomain: rel.TrustDomain.Name(), BundleEndpointUrl: rel.URL, Profile: string(rel.Profile),
			LastRefreshAt: unixOrZero(st.LastRefresh), LastError: st.LastError, NextRefreshAt: unixOrZero(st.NextRefresh),
		}
		if !rel.EndpointID.IsZero() {
			r.EndpointSpiffeId = rel.EndpointID.String()
		}
		b, err := h.s.store.GetBundle(ctx, rel.TrustDomain.Name())
		switch {
		case err == nil:
			r.BundleSequence = b.GetSequenceNumber()
		case !errors.Is(err, store.ErrNotFound):
			return nil, h.s.storeError(ctx, err)
		}
		out.Relationships = append(out.Relationships, r)
	}
	return out, nil
}

// federatedTrustDomain checks a request's trust_domain: a plain trust
// domain name, not the server's own (whose bundle the CA manages).
func (s *Service) federatedTrustDomain(name string) (spiffeid.TrustDomain, error) {
	if name == "" {
		return spiffeid.TrustDomain{}, errors.New("trust_domain: required")
	}
	td, err := spiffeid.TrustDomainFromString(name)
	switch {
	case err != nil:
		return spiffeid.TrustDomain{}, fmt.Errorf("trust_domain: %q is not a trust domain name: %v", name, err)
	case td.Name() != name:
		return spiffeid.TrustDomain{}, fmt.Errorf("trust_domain: %q is not a trust domain name; give %q", name, td.Name())
	case td == s.td:
		return spiffeid.TrustDomain{}, fmt.Errorf("trust_domain: %q is this server's own trust domain, "+
			"whose bundle its CA manages (nhidctl bundle show); federated bundles are other trust domains'", name)
	}
	return td, nil
}

// unixOrZero is t in unix seconds, 0 for the zero time.
func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}
