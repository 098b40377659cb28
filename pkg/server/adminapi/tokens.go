package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/jointoken"
	"github.com/nhid/nhid/pkg/telemetry"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// maxTokenID bounds a token id in a request; generated ids are 24 bytes.
const maxTokenID = 64

// Actions of the join token changes, after audit.ActionAdminPrefix.
const (
	actionTokenGenerate = "token.generate"
	actionTokenRevoke   = "token.revoke"
)

type tokenService struct {
	adminv1.UnimplementedJoinTokenServiceServer
	s *Service
}

// GenerateToken makes a single-use join token. Only the hash of its secret
// is stored, so the response is the only time the secret is seen.
//
// Its audit record names the token by its id, never the token itself.
func (h *tokenService) GenerateToken(ctx context.Context, req *adminv1.GenerateTokenRequest) (_ *adminv1.GenerateTokenResponse, retErr error) {
	ch := change{action: actionTokenGenerate, details: map[string]any{}}
	defer func() { h.s.audit(ctx, ch, retErr) }()
	ttl, fixed, err := h.s.checkGenerate(req)
	if err != nil {
		return nil, invalidArgument(err)
	}
	tok, err := h.s.generateToken()
	if err != nil {
		return nil, h.s.internal(ctx, "generate join token", err)
	}
	agentID := fixed
	if agentID.IsZero() {
		if agentID, err = agentid.New(h.s.td, jointoken.Type, tok.ID); err != nil {
			return nil, h.s.internal(ctx, "agent id for join token", err)
		}
	}
	now := h.s.clock.Now()
	jt := &typesv1.JoinToken{
		Id:         tok.ID,
		SecretHash: tok.SecretHash(),
		ExpiresAt:  now.Add(ttl).Unix(),
		CreatedAt:  now.Unix(),
	}
	if !fixed.IsZero() {
		jt.SpiffeId = fixed.String()
	}
	ch.target = jt.Id
	ch.details[telemetry.SPIFFEID], ch.details[telemetry.ExpiresAt] = agentID.String(), jt.ExpiresAt
	if err := h.s.store.CreateJoinToken(ctx, jt); err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	ch.attrs = []slog.Attr{
		slog.String(telemetry.TokenID, jt.Id),
		slog.String(telemetry.SPIFFEID, agentID.String()),
		slog.Int64(telemetry.ExpiresAt, jt.ExpiresAt),
	}
	return &adminv1.GenerateTokenResponse{
		Token:     tok.String(),
		SpiffeId:  agentID.String(),
		Id:        jt.Id,
		ExpiresAt: jt.ExpiresAt,
	}, nil
}

// checkGenerate returns the token lifetime and the fixed agent ID, if any.
func (s *Service) checkGenerate(req *adminv1.GenerateTokenRequest) (time.Duration, spiffeid.ID, error) {
	var errs []error
	ttl := time.Duration(req.GetTtl()) * time.Second
	switch {
	case req.GetTtl() < 0:
		errs = append(errs, fmt.Errorf("ttl: %d is negative; use 0 for the default of %v", req.GetTtl(), s.tokenTTL))
	case ttl == 0:
		ttl = s.tokenTTL
	case ttl > s.maxTTL:
		errs = append(errs, fmt.Errorf("ttl: %ds is above the maximum of %v", req.GetTtl(), s.maxTTL))
	}
	var fixed spiffeid.ID
	if raw := req.GetSpiffeId(); raw != "" {
		id, err := spiffeid.FromString(raw)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("spiffe_id: %q is not a valid SPIFFE ID: %w", raw, err))
		case !id.MemberOf(s.td):
			errs = append(errs, fmt.Errorf("spiffe_id: %q is not in trust domain %q", raw, s.td.Name()))
		case !agentid.IsAgent(id):
			errs = append(errs, fmt.Errorf("spiffe_id: %q is not an agent ID: use %s/nhid/agent/<attestor>/<node-id>", raw, s.td.IDString()))
		default:
			fixed = id
		}
	}
	return ttl, fixed, errors.Join(errs...)
}

// ListTokens describes every join token, without secrets or their hashes.
func (h *tokenService) ListTokens(ctx context.Context, _ *adminv1.ListTokensRequest) (*adminv1.ListTokensResponse, error) {
	tokens, err := h.s.store.ListJoinTokens(ctx)
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	out := make([]*adminv1.TokenInfo, 0, len(tokens))
	for _, t := range tokens {
		spiffeID := t.GetSpiffeId()
		if spiffeID == "" {
			if id, err := agentid.New(h.s.td, jointoken.Type, t.GetId()); err == nil {
				spiffeID = id.String()
			}
		}
		out = append(out, &adminv1.TokenInfo{
			Id:        t.GetId(),
			SpiffeId:  spiffeID,
			ExpiresAt: t.GetExpiresAt(),
			CreatedAt: t.GetCreatedAt(),
			UsedAt:    t.GetUsedAt(),
			UsedBy:    t.GetUsedBy(),
		})
	}
	return &adminv1.ListTokensResponse{Tokens: out}, nil
}

// RevokeToken deletes a join token so it can no longer be used.
func (h *tokenService) RevokeToken(ctx context.Context, req *adminv1.RevokeTokenRequest) (_ *adminv1.RevokeTokenResponse, retErr error) {
	// The target is set only once the id is known not to be a whole
	// token: a secret must not reach the audit log.
	ch := change{action: actionTokenRevoke}
	defer func() { h.s.audit(ctx, ch, retErr) }()
	id := req.GetId()
	switch {
	case id == "":
		return nil, invalidArgument(errors.New("id: is required"))
	case strings.Contains(id, "."):
		// Never echo it: it is probably a whole token, secret included.
		return nil, invalidArgument(errors.New("id: holds a '.': pass only the token id, the part before the '.'"))
	case len(id) > maxTokenID:
		return nil, invalidArgument(fmt.Errorf("id: is %d bytes; token ids are at most %d", len(id), maxTokenID))
	}
	ch.target = id
	if err := h.s.store.DeleteJoinToken(ctx, id); err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	ch.attrs = []slog.Attr{slog.String(telemetry.TokenID, id)}
	return &adminv1.RevokeTokenResponse{}, nil
}
