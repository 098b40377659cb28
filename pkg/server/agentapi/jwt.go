package agentapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/svid"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Audience bounds of MintJWTSVID: the JWT-SVID format's, which the
// Workload API also checks so that workloads learn InvalidArgument.
const (
	maxAudiences     = svid.MaxJWTAudiences
	maxAudienceBytes = svid.MaxJWTAudienceLen
)

// JWT claims carrying the entry's purpose and owner, so a relying party
// sees what the token was issued for without asking the ledger.
const (
	claimPurpose = "purpose"
	claimOwner   = "owner"
)

// MintJWTSVID signs a JWT-SVID for an entry authorised for the calling
// node. Every call, refused or not, makes one svid.mint audit record.
func (s *Service) MintJWTSVID(ctx context.Context, req *agentv1.MintJWTSVIDRequest) (*agentv1.MintJWTSVIDResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	resp, e, row, err := s.mintJWT(ctx, c, req)
	s.recordJWTMint(ctx, c, req, e, row, err)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// mintJWT signs and records the JWT-SVID; e is the entry once known, row
// the ledger row once written.
func (s *Service) mintJWT(ctx context.Context, c *caller, req *agentv1.MintJWTSVIDRequest) (_ *agentv1.MintJWTSVIDResponse, e *typesv1.Entry, _ *typesv1.IssuedSVID, _ error) {
	if err := s.refuseUntrusted(ctx, c.node, "JWT-SVID minting"); err != nil {
		return nil, nil, nil, err
	}
	if err := checkAudience(req.GetAudience()); err != nil {
		return nil, nil, nil, err
	}
	if req.GetTtl() < 0 {
		return nil, nil, nil, status.Errorf(codes.InvalidArgument, "ttl: %d is negative", req.GetTtl())
	}
	if max := int64(s.cfg.MaxJWTTTL / time.Second); int64(req.GetTtl()) > max {
		return nil, nil, nil, status.Errorf(codes.InvalidArgument, "ttl: %d s exceeds the maximum of %d s", req.GetTtl(), max)
	}
	az, _, err := s.loadAuthz(ctx, c.node)
	if err != nil {
		return nil, nil, nil, s.internal(ctx, "load node aliases", err)
	}
	now := s.clock.Now()
	e, id, st := s.authorisedEntry(ctx, az, req.GetEntryId(), now)
	if st != nil {
		return nil, nil, nil, st.Err()
	}
	token, iat, exp, err := s.ca.SignJWTSVID(ctx, ca.JWTParams{
		ID: id, Audience: req.GetAudience(), TTL: s.jwtTTL(req.GetTtl(), e), ExtraClaims: jwtClaims(e),
	})
	if err != nil {
		return nil, e, nil, s.internal(ctx, "sign JWT-SVID", err)
	}
	jti, err := tokenID(token)
	if err != nil {
		return nil, e, nil, s.internal(ctx, "read JWT-SVID id", err)
	}
	row := ledgerRow(typesv1.SVIDKind_SVID_KIND_JWT, jti, e, c, iat, exp)
	row.Audience = append([]string(nil), req.GetAudience()...)
	if err := s.store.RecordIssued(ctx, []*typesv1.IssuedSVID{row}); err != nil {
		return nil, e, nil, s.internal(ctx, "record issued JWT-SVID", err)
	}
	s.metrics.issued.WithLabelValues("jwt").Inc()
	telemetry.Logger(ctx, s.log).Debug("JWT-SVID issued", telemetry.EntryID, e.GetId(),
		telemetry.SPIFFEID, e.GetSpiffeId(), telemetry.ExpiresAt, exp)
	return &agentv1.MintJWTSVIDResponse{Token: token, ExpiresAt: exp.Unix(), IssuedAt: iat.Unix()}, e, row, nil
}

func checkAudience(aud []string) error {
	if len(aud) == 0 {
		return status.Error(codes.InvalidArgument, "audience: at least one value is required")
	}
	if len(aud) > maxAudiences {
		return status.Errorf(codes.InvalidArgument, "audience: %d values, at most %d allowed", len(aud), maxAudiences)
	}
	for i, a := range aud {
		switch {
		case a == "":
			return status.Errorf(codes.InvalidArgument, "audience[%d]: empty", i)
		case len(a) > maxAudienceBytes:
			return status.Errorf(codes.InvalidArgument, "audience[%d]: %d bytes, at most %d allowed", i, len(a), maxAudienceBytes)
		}
	}
	return nil
}

// jwtTTL is the requested TTL, else the entry's, else the default; never
// above the maximum.
func (s *Service) jwtTTL(reqSeconds int32, e *typesv1.Entry) time.Duration {
	ttl := s.cfg.DefaultJWTTTL
	switch {
	case reqSeconds > 0:
		ttl = time.Duration(reqSeconds) * time.Second
	case e.GetJwtTtl() > 0:
		ttl = time.Duration(e.GetJwtTtl()) * time.Second
	}
	return min(ttl, s.cfg.MaxJWTTTL)
}

func jwtClaims(e *typesv1.Entry) map[string]any {
	claims := make(map[string]any, 2)
	if e.GetPurpose() != "" {
		claims[claimPurpose] = e.GetPurpose()
	}
	if e.GetOwner() != "" {
		claims[claimOwner] = e.GetOwner()
	}
	return claims
}

// tokenID reads the jti claim of a token the CA just signed; the payload
// is trusted, so its signature is not checked again.
func tokenID(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("decode payload: %w", err)
	}
	var claims struct {
		JTI string `json:"jti"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", fmt.Errorf("decode claims: %w", err)
	}
	if claims.JTI == "" {
		return "", errors.New("token has no jti")
	}
	return claims.JTI, nil
}
