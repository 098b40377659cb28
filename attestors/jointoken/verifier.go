package jointoken

import (
	"context"
	"errors"
	"fmt"
	tokenfmt "github.com/nhid/nhid/pkg/jointoken"
	"log/slog"
	"time"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TokenStore is what the verifier needs from the server store (a subset of
// store.TokenStore).
type TokenStore interface {
	// GetJoinToken returns the token; ErrNotFound if absent.
	GetJoinToken(ctx context.Context, id string) (*typesv1.JoinToken, error)
	// UseJoinToken atomically checks and marks a token used; see
	// store.TokenStore for its errors.
	UseJoinToken(ctx context.Context, id string, secretHash []byte, usedBy string, now time.Time) (*typesv1.JoinToken, error)
}

// Refusal reasons. The agent sees "attestation failed: <reason>".
var (
	errMalformed = fmt.Errorf("%w: join token malformed", attestor.ErrAttestationFailed)
	errUnknown   = fmt.Errorf("%w: join token unknown", attestor.ErrAttestationFailed)
	errUsed      = fmt.Errorf("%w: join token already used", attestor.ErrAttestationFailed)
	errExpired   = fmt.Errorf("%w: join token expired", attestor.ErrAttestationFailed)
	errInvalid   = fmt.Errorf("%w: join token invalid", attestor.ErrAttestationFailed)
)

// VerifierConfig configures the server half.
type VerifierConfig struct {
	// TrustDomain is the domain agent IDs are minted in. Required.
	TrustDomain spiffeid.TrustDomain
	// Tokens is the token store. Required.
	Tokens TokenStore
	// Clock decides expiry. Defaults to the wall clock.
	Clock clock.Clock
	// Log receives one line per attestation. Defaults to slog.Default().
	Log *slog.Logger
}

// Verifier is the server half of the join-token attestor. It implements
// attestor.NodeVerifier and is safe for concurrent use.
type Verifier struct {
	td     spiffeid.TrustDomain
	tokens TokenStore
	clock  clock.Clock
	log    *slog.Logger
}

// NewVerifier returns the server half.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("join token verifier: TrustDomain: must be set")
	}
	if cfg.Tokens == nil {
		return nil, errors.New("join token verifier: Tokens: must be set")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Verifier{
		td:     cfg.TrustDomain,
		tokens: cfg.Tokens,
		clock:  clock.OrReal(cfg.Clock),
		log:    cfg.Log.With(telemetry.Attestor, Type),
	}, nil
}

// Type returns "join_token".
func (v *Verifier) Type() string { return Type }

// Attest accepts a valid, unused, unexpired token once. The node gets the
// token's fixed agent ID if it has one, else .../nhid/agent/join_token/<id>.
// Join tokens have no challenge, so challenge is never called.
//
// The token is read before it is used: an unknown id is refused without
// taking the store's write lock, a stored agent ID the verifier cannot give
// leaves the token unused, and used_by records the ID the node really gets.
func (v *Verifier) Attest(ctx context.Context, payload []byte, _ attestor.Challenger) (attestor.NodeResult, error) {
	if err := ctx.Err(); err != nil {
		return attestor.NodeResult{}, fmt.Errorf("join token attestation: %w", err)
	}
	tok, err := parsePayload(payload)
	if err != nil {
		v.log.Warn("join token attestation refused", telemetry.Reason, errMalformed.Error(), telemetry.Error, err)
		return attestor.NodeResult{}, errMalformed
	}
	log := v.log.With(telemetry.TokenID, tok.ID)
	agentID, err := v.storedAgentID(ctx, tok.ID)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, err)
	}
	// A stored token is never changed, only used or revoked, so the agent
	// ID read above is the one the token gives when it is used below.
	if _, err := v.tokens.UseJoinToken(ctx, tok.ID, tok.SecretHash(), agentID.String(), v.clock.Now()); err != nil {
		return attestor.NodeResult{}, v.refuse(log, err)
	}
	log.Info("join token attested", telemetry.SPIFFEID, agentID.String())
	return attestor.NodeResult{AgentID: agentID, CanReattest: false}, nil
}

// parsePayload refuses a payload of the wrong length before copying it, so
// a huge payload costs nothing.
func parsePayload(payload []byte) (tokenfmt.Token, error) {
	if len(payload) != tokenfmt.Len {
		return tokenfmt.Token{}, fmt.Errorf("payload is %d bytes, want %d", len(payload), tokenfmt.Len)
	}
	return tokenfmt.Parse(string(payload))
}

// storedAgentID reads the token and returns the ID the node will get: the
// token's fixed agent ID if it has one, else the default ID for the token.
func (v *Verifier) storedAgentID(ctx context.Context, id string) (spiffeid.ID, error) {
	t, err := v.tokens.GetJoinToken(ctx, id)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return v.agentIDOf(t)
}

func (v *Verifier) defaultAgentID(id string) (spiffeid.ID, error) {
	agentID, err := agentid.New(v.td, Type, id)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("join token %s: %w", id, err)
	}
	return agentID, nil
}

// agentIDOf returns the stored token's fixed agent ID, checked to be an
// agent ID in our trust domain, or the default ID for the token.
func (v *Verifier) agentIDOf(t *typesv1.JoinToken) (spiffeid.ID, error) {
	raw := t.GetSpiffeId()
	if raw == "" {
		return v.defaultAgentID(t.GetId())
	}
	id, err := spiffeid.FromString(raw)
	switch {
	case err != nil:
		return spiffeid.ID{}, fmt.Errorf("join token %s: stored spiffe_id %q: %w", t.GetId(), raw, err)
	case !id.MemberOf(v.td):
		return spiffeid.ID{}, fmt.Errorf("join token %s: stored spiffe_id %q is not in trust domain %q", t.GetId(), raw, v.td.Name())
	case !agentid.IsAgent(id):
		return spiffeid.ID{}, fmt.Errorf("join token %s: stored spiffe_id %q is not an agent ID", t.GetId(), raw)
	}
	return id, nil
}

// refuse maps a store error to the refusal the agent sees and logs it. An
// error that is not about the token (the store failed, the caller left) is
// returned as it is, so it is not mistaken for a verdict on the token.
func (v *Verifier) refuse(log *slog.Logger, err error) error {
	var reason error
	switch {
	case errors.Is(err, store.ErrNotFound):
		reason = errUnknown
	case errors.Is(err, store.ErrTokenUsed):
		reason = errUsed
	case errors.Is(err, store.ErrTokenExpired):
		reason = errExpired
	case errors.Is(err, store.ErrTokenInvalid):
		reason = errInvalid
	default:
		log.Error("join token attestation failed", telemetry.Error, err)
		return fmt.Errorf("join token attestation: %w", err)
	}
	// The store's error names the token id and when it was used or expired;
	// it never holds the secret.
	log.Warn("join token attestation refused", telemetry.Reason, reason.Error(), telemetry.Error, err)
	return reason
}
