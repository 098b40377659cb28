package jointoken

import (
	"context"
	"errors"
	"fmt"
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
	// UseJoinToken atomically checks and marks a token used; see
	// store.TokenStore for its errors.
	UseJoinToken(ctx context.Context, id string, secretHash []byte, usedBy string, now time.Time) (*typesv1.JoinToken, error)
}

// TokenGetter is optionally implemented by a TokenStore that can read one
// token. With it the verifier learns a token's fixed agent ID before using
// the token, so used_by records the ID the node really gets, and refuses
// unknown ids without a write transaction.
type TokenGetter interface {
	GetJoinToken(ctx context.Context, id string) (*typesv1.JoinToken, error)
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
	getter TokenGetter // nil if the store cannot read single tokens
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
	getter, _ := cfg.Tokens.(TokenGetter)
	return &Verifier{
		td:     cfg.TrustDomain,
		tokens: cfg.Tokens,
		getter: getter,
		clock:  clock.OrReal(cfg.Clock),
		log:    cfg.Log.With(telemetry.Attestor, Type),
	}, nil
}

// Type returns "join_token".
func (v *Verifier) Type() string { return Type }

// Attest accepts a valid, unused, unexpired token once. The node gets the
// token's fixed agent ID if it has one, else .../nhid/agent/join_token/<id>.
// Join tokens have no challenge, so challenge is never called.
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
	usedBy, err := v.expectedAgentID(ctx, tok.ID)
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, err)
	}
	used, err := v.tokens.UseJoinToken(ctx, tok.ID, tok.SecretHash(), usedBy.String(), v.clock.Now())
	if err != nil {
		return attestor.NodeResult{}, v.refuse(log, err)
	}
	agentID, err := v.agentIDOf(used)
	if err != nil {
		log.Error("join token used but its agent id is unusable", telemetry.Error, err)
		return attestor.NodeResult{}, err
	}
	if agentID != usedBy {
		// Only without a TokenGetter: the fixed ID was learnt too late
		// for used_by, which holds the token's default agent ID instead.
		log.Info("join token has a fixed agent id; used_by records its default id",
			telemetry.SPIFFEID, agentID.String(), "used_by", usedBy.String())
	}
	log.Info("join token attested", telemetry.SPIFFEID, agentID.String())
	return attestor.NodeResult{AgentID: agentID, CanReattest: false}, nil
}

// parsePayload refuses a payload of the wrong length before copying it, so
// a huge payload costs nothing.
func parsePayload(payload []byte) (Token, error) {
	if len(payload) != tokenLen {
		return Token{}, fmt.Errorf("payload is %d bytes, want %d", len(payload), tokenLen)
	}
	return Parse(string(payload))
}

// expectedAgentID is the ID the node will get, as far as can be known
// before the token is used: its fixed ID if the store can tell, else the
// default ID for the token.
func (v *Verifier) expectedAgentID(ctx context.Context, id string) (spiffeid.ID, error) {
	if v.getter == nil {
		return v.defaultAgentID(id)
	}
	t, err := v.getter.GetJoinToken(ctx, id)
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
