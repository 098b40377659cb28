package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// maxJWTs bounds the JWT-SVID cache; past it, tokens that are due for
// refresh go first, then arbitrary ones.
const maxJWTs = 10000

// ErrUnknownEntry is returned by FetchJWTSVID for an entry the agent no
// longer serves (deleted, expired or changed into an alias).
var ErrUnknownEntry = errors.New("entry is not served by this agent")

// jwtToken is a cached JWT-SVID. The token is a secret and never logged.
type jwtToken struct {
	token     string
	refreshAt time.Time
}

// FetchJWTSVID returns a JWT-SVID for the entry and audience. Tokens are
// cached per (entry, entry revision, audience) until half their life, so a
// workload asking often costs the server one signature per half life.
func (m *Manager) FetchJWTSVID(ctx context.Context, e *typesv1.Entry, audience []string) (string, error) {
	if e.GetId() == "" {
		return "", errors.New("fetch JWT-SVID: entry.id: must not be empty")
	}
	aud, err := normaliseAudience(audience)
	if err != nil {
		return "", fmt.Errorf("fetch JWT-SVID: %w", err)
	}
	now := m.clock.Now()
	m.mu.Lock()
	r := m.entries[e.GetId()]
	if r == nil || !r.served {
		m.mu.Unlock()
		return "", fmt.Errorf("fetch JWT-SVID for entry %s: %w", e.GetId(), ErrUnknownEntry)
	}
	key := e.GetId() + "\x00" + strconv.FormatInt(r.entry.GetRevision(), 10) + "\x00" + strings.Join(aud, "\x00")
	if t, ok := m.jwts[key]; ok && now.Before(t.refreshAt) {
		m.mu.Unlock()
		m.metrics.jwtServed.Inc()
		return t.token, nil
	}
	m.mu.Unlock()

	// Concurrent requests for the same token share one call, which is not
	// tied to any one caller's context so that its cancellation does not
	// fail the others.
	ch := m.jwtMint.DoChan(key, func() (any, error) { return m.mintJWT(e.GetId(), aud, key) })
	select {
	case <-ctx.Done():
		return "", fmt.Errorf("fetch JWT-SVID for entry %s: %w", e.GetId(), ctx.Err())
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		m.metrics.jwtServed.Inc()
		return res.Val.(string), nil
	}
}

func normaliseAudience(audience []string) ([]string, error) {
	if len(audience) == 0 {
		return nil, errors.New("audience: must not be empty")
	}
	for i, a := range audience {
		if a == "" {
			return nil, fmt.Errorf("audience[%d]: must not be empty", i)
		}
	}
	aud := slices.Clone(audience)
	slices.Sort(aud)
	return slices.Compact(aud), nil
}

func (m *Manager) mintJWT(entryID string, aud []string, key string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), mintTimeout)
	defer cancel()
	resp, err := m.minter.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: entryID, Audience: aud})
	if err == nil {
		err = checkJWTResponse(resp, m.clock.Now())
	}
	if err != nil {
		m.metrics.jwtFailures.Inc()
		return "", fmt.Errorf("mint JWT-SVID for entry %s: %w", entryID, err)
	}
	m.metrics.jwtMinted.Inc()
	iat, exp := resp.GetIssuedAt(), resp.GetExpiresAt()
	if iat == 0 {
		iat = m.clock.Now().Unix()
	}
	t := jwtToken{token: resp.GetToken(), refreshAt: time.Unix(iat+(exp-iat)/2, 0)}
	m.mu.Lock()
	m.pruneJWTsLocked(m.clock.Now())
	m.jwts[key] = t
	m.mu.Unlock()
	return t.token, nil
}

func checkJWTResponse(resp *agentv1.MintJWTSVIDResponse, now time.Time) error {
	switch {
	case resp.GetToken() == "":
		return errors.New("mint response: token: empty")
	case resp.GetExpiresAt() <= now.Unix():
		return fmt.Errorf("mint response: expires_at %d: not in the future", resp.GetExpiresAt())
	case resp.GetIssuedAt() > resp.GetExpiresAt():
		return fmt.Errorf("mint response: issued_at %d: after expires_at %d", resp.GetIssuedAt(), resp.GetExpiresAt())
	}
	return nil
}

func (m *Manager) pruneJWTsLocked(now time.Time) {
	if len(m.jwts) < maxJWTs {
		return
	}
	for k, t := range m.jwts {
		if !now.Before(t.refreshAt) {
			delete(m.jwts, k)
		}
	}
	for k := range m.jwts {
		if len(m.jwts) < maxJWTs*9/10 {
			break
		}
		delete(m.jwts, k)
	}
}
