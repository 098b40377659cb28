package adminapi

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

type bundleService struct {
	adminv1.UnimplementedBundleServiceServer
	s *Service
}

// GetBundle returns the trust domain's bundle with its X.509 authorities as
// PEM and the whole bundle as a SPIFFE bundle JWKS document.
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
	sb := spiffebundle.New(s.td)
	var pemText strings.Builder
	for i, a := range b.GetX509Authorities() {
		cert, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return "", "", fmt.Errorf("x509_authorities[%d]: %w", i, err)
		}
		sb.AddX509Authority(cert)
		if err := pem.Encode(&pemText, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}); err != nil {
			return "", "", fmt.Errorf("x509_authorities[%d]: encode PEM: %w", i, err)
		}
	}
	for i, a := range b.GetJwtAuthorities() {
		key, err := x509.ParsePKIXPublicKey(a.GetPublicKey())
		if err != nil {
			return "", "", fmt.Errorf("jwt_authorities[%d] (key id %q): %w", i, a.GetKeyId(), err)
		}
		if err := sb.AddJWTAuthority(a.GetKeyId(), key); err != nil {
			return "", "", fmt.Errorf("jwt_authorities[%d]: %w", i, err)
		}
	}
	if hint := b.GetRefreshHint(); hint > 0 {
		sb.SetRefreshHint(time.Duration(hint) * time.Second)
	}
	sb.SetSequenceNumber(b.GetSequenceNumber())
	jwks, err := sb.Marshal()
	if err != nil {
		return "", "", fmt.Errorf("marshal JWKS: %w", err)
	}
	return pemText.String(), string(jwks), nil
}
