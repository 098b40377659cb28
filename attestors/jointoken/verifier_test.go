package jointoken

import (
	"bytes"
	"context"
	tokenfmt "github.com/nhid/nhid/pkg/jointoken"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTD  = spiffeid.RequireTrustDomainFromString("example.org")
	testNow = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
)

const tokenTTL = 10 * time.Minute

// countingStore is the real bolt store, counting token uses so tests can
// check a refusal took no write transaction.
type countingStore struct {
	*bolt.Store
	uses atomic.Int32
}

func (c *countingStore) UseJoinToken(ctx context.Context, id string, secretHash []byte, usedBy string, now time.Time) (*typesv1.JoinToken, error) {
	c.uses.Add(1)
	return c.Store.UseJoinToken(ctx, id, secretHash, usedBy, now)
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
	uses  *atomic.Int32 // UseJoinToken calls the verifier made
	clock *clock.Fake
	v     *Verifier
	logs  *syncBuffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "server.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	tokens := &countingStore{Store: st}
	f := &fixture{store: st, uses: &tokens.uses, clock: clock.NewFake(testNow), logs: &syncBuffer{}}
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
func (f *fixture) createToken(t *testing.T, spiffeID string) tokenfmt.Token {
	t.Helper()
	tok, err := tokenfmt.Generate()
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
	tok, err := f.store.GetJoinToken(context.Background(), id)
	if err != nil {
		t.Fatalf("GetJoinToken(%s): %v", id, err)
	}
	return tok
}

func TestVerifier_Conformance(t *testing.T) {
	f := newFixture(t)
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
}

// used_by always names the ID the node gets: the token's default agent ID,
// or the fixed one the token was created with.
func TestVerifier_UsedByRecordsTheAgentIDGiven(t *testing.T) {
	tests := []struct {
		name  string
		fixed string // "" = the token has no fixed agent ID
	}{
		{"default agent ID", ""},
		{"fixed agent ID", "spiffe://example.org/nhid/agent/join_token/db-node-7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tok := f.createToken(t, tt.fixed)
			res, err := f.attest(tok.String())
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			want := tt.fixed
			if want == "" {
				want = "spiffe://example.org/nhid/agent/join_token/" + tok.ID
			}
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
