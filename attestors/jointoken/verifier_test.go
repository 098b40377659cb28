package jointoken

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTD  = spiffeid.RequireTrustDomainFromString("example.org")
	testNow = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
)

const tokenTTL = 10 * time.Minute

// getterStore gives the real bolt store a GetJoinToken, built on its own
// ListJoinTokens, to exercise the verifier's TokenGetter path.
type getterStore struct{ *bolt.Store }

func (s getterStore) GetJoinToken(ctx context.Context, id string) (*typesv1.JoinToken, error) {
	tokens, err := s.ListJoinTokens(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range tokens {
		if t.GetId() == id {
			return t, nil
		}
	}
	return nil, fmt.Errorf("join token %q: %w", id, store.ErrNotFound)
}

// storeKinds are the two ways the verifier can see the store.
var storeKinds = []struct {
	name   string
	getter bool
}{
	{"UseOnly", false},
	{"WithGetter", true},
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	store *bolt.Store
	clock *clock.Fake
	v     *Verifier
	logs  *syncBuffer
}

func newFixture(t *testing.T, getter bool) *fixture {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "server.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f := &fixture{store: st, clock: clock.NewFake(testNow), logs: &syncBuffer{}}
	var tokens TokenStore = st
	if getter {
		tokens = getterStore{st}
	}
	f.v, err = NewVerifier(VerifierConfig{
		TrustDomain: testTD, Tokens: tokens, Clock: f.clock,
		Log: slog.New(slog.NewTextHandler(f.logs, nil)),
	})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return f
}

// createToken stores a new token, as the admin API does, and returns it.
func (f *fixture) createToken(t *testing.T, spiffeID string) Token {
	t.Helper()
	tok, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	err = f.store.CreateJoinToken(context.Background(), &typesv1.JoinToken{
		Id: tok.ID, SecretHash: tok.SecretHash(), SpiffeId: spiffeID,
		CreatedAt: f.clock.Now().Unix(), ExpiresAt: f.clock.Now().Add(tokenTTL).Unix(),
	})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	return tok
}

func (f *fixture) attest(payload string) (attestor.NodeResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.v.Attest(ctx, []byte(payload), nil)
}

func (f *fixture) stored(t *testing.T, id string) *typesv1.JoinToken {
	t.Helper()
	tokens, err := f.store.ListJoinTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		if tok.GetId() == id {
			return tok
		}
	}
	t.Fatalf("token %s not in store", id)
	return nil
}

func TestVerifier_Conformance(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			f := newFixture(t, kind.getter)
			attestortest.NodeCase{
				Verifier:    f.v,
				TrustDomain: testTD,
				NewEvidence: func(t *testing.T) attestor.NodeEvidence {
					ev, err := NewEvidence(f.createToken(t, "").String())
					if err != nil {
						t.Fatal(err)
					}
					return ev
				},
			}.Run(t)
		})
	}
}

func TestVerifier_DefaultAgentIDIsRecorded(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			f := newFixture(t, kind.getter)
			tok := f.createToken(t, "")
			res, err := f.attest(tok.String())
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			want := "spiffe://example.org/nhid/agent/join_token/" + tok.ID
			got := f.stored(t, tok.ID)
			if diff := cmp.Diff(
				[]any{want, false, want, testNow.Unix()},
				[]any{res.AgentID.String(), res.CanReattest, got.GetUsedBy(), got.GetUsedAt()},
			); diff != "" {
				t.Errorf("[agent id, can reattest, used_by, used_at] (-want +got):\n%s", diff)
			}
			if len(res.Selectors) != 0 {
				t.Errorf("selectors = %v, want none", res.Selectors)
			}
		})
	}
}

func TestVerifier_FixedAgentIDIsGiven(t *testing.T) {
	const fixed = "spiffe://example.org/nhid/agent/join_token/db-node-7"
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			f := newFixture(t, kind.getter)
			tok := f.createToken(t, fixed)
			res, err := f.attest(tok.String())
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if got := res.AgentID.String(); got != fixed {
				t.Errorf("AgentID = %s, want the fixed %s", got, fixed)
			}
			// Only a store that can read the token first lets used_by name
			// the fixed ID; otherwise it holds the token's default ID.
			wantUsedBy := "spiffe://example.org/nhid/agent/join_token/" + tok.ID
			if kind.getter {
				wantUsedBy = fixed
			}
			if got := f.stored(t, tok.ID).GetUsedBy(); got != wantUsedBy {
				t.Errorf("used_by = %s, want %s", got, wantUsedBy)
			}
		})
	}
}
