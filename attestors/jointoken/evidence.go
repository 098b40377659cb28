package jointoken

import (
	"context"
	"errors"
	"fmt"
	tokenfmt "github.com/nhid/nhid/pkg/jointoken"
)

// Evidence is the agent half of the join-token attestor: it presents the
// token, once. It implements attestor.NodeEvidence.
type Evidence struct {
	token tokenfmt.Token
}

// NewEvidence checks token's format, so a mistyped token is reported on
// the agent before anything is sent to the server.
func NewEvidence(token string) (*Evidence, error) {
	t, err := tokenfmt.Parse(token)
	if err != nil {
		return nil, err
	}
	return &Evidence{token: t}, nil
}

// Type returns "join_token".
func (e *Evidence) Type() string { return Type }

// Evidence returns the token, the whole of the join-token evidence.
func (e *Evidence) Evidence(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("join token evidence: %w", err)
	}
	return []byte(e.token.String()), nil
}

// Respond always fails: a join token is checked in one step, so a server
// that sends a challenge is not following the join-token protocol.
func (e *Evidence) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("join token attestation has no challenge; refusing to answer one")
}

// Type is the attestor type, "join_token".
const Type = tokenfmt.Type
