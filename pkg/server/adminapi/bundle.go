package adminapi

import (
	"context"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/nhid/nhid/pkg/federation"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

type bundleService struct {
	adminv1.UnimplementedBundleServiceServer
	s *Service
}

// GetBundle returns the trust domain's bundle with its X.509 authorities as
// PEM and the whole bundle as a SPIFFE bundle JWKS document, the one the
// bundle endpoint serves.
func (h *bundleService) GetBundle(ctx context.Context, _ *adminv1.GetBundleRequest) (*adminv1.GetBundleResponse, error) {
	b, err := h.s.store.GetBundle(ctx, h.s.td.Name())
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	pemText, jwks, err := h.s.renderBundle(b)
	if err != nil {
		return nil, h.s.internal(ctx, "render stored bundle", err)
	}
	return &adminv1.GetBundleResponse{Bundle: b, Pem: pemText, Jwks: jwks}, nil
}

// renderBundle builds the PEM and JWKS forms. A record that does not parse
// means a corrupt store, which is the server's problem, not the caller's.
func (s *Service) renderBundle(b *typesv1.Bundle) (string, string, error) {
	sb, err := federation.ToSPIFFE(b)
	if err != nil {
		return "", "", err
	}
	var pemText strings.Builder
	for i, cert := range sb.X509Authorities() {
		if err := pem.Encode(&pemText, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}); err != nil {
			return "", "", fmt.Errorf("x509_authorities[%d]: encode PEM: %w", i, err)
		}
	}
	// The document the bundle endpoint serves (with its refresh hint: a
	// bundle SHOULD carry one, SPIFFE Trust Domain and Bundle section
	// 4.1.2), so that what an operator hands a partner as its bootstrap
	// bundle is what the partner will fetch.
	hint := s.bundleHint
	if hint == 0 {
		hint = federation.DefaultRefreshHint
	}
	jwks, err := federation.Marshal(b, hint)
	if err != nil {
		return "", "", fmt.Errorf("marshal JWKS: %w", err)
	}
	return pemText.String(), string(jwks), nil
}
