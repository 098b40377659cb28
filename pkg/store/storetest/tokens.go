package storetest

import (
	"crypto/sha256"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var tokenTests = []suiteTest{
	{"CreateRejectsATakenID", testCreateJoinToken},
	{"UseJoinToken", testUseJoinToken},
	{"GetReturnsTheStoredToken", testGetJoinToken},
	{"GetReturnsACopy", testGetJoinTokenIsolation},
	{"WrongSecretLeavesTheTokenUsable", testUseJoinTokenWrongSecret},
	{"ListReturnsEveryToken", testListJoinTokens},
	{"DeleteRevokesTheToken", testDeleteJoinToken},
	{"PruneDropsOnlyExpiredTokens", testPruneJoinTokens},
}

// tokenEpoch is the creation time of test tokens. UseJoinToken takes the
// time as an argument, so any fixed instant works.
var tokenEpoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func secretHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func newToken(id string, ttl time.Duration) *typesv1.JoinToken {
	return &typesv1.JoinToken{
		Id:         id,
		SecretHash: secretHash("secret-of-" + id),
		ExpiresAt:  tokenEpoch.Add(ttl).Unix(),
		CreatedAt:  tokenEpoch.Unix(),
	}
}

func createToken(t *testing.T, s store.Store, tok *typesv1.JoinToken) {
	t.Helper()
	if err := s.CreateJoinToken(t.Context(), tok); err != nil {
		t.Fatalf("CreateJoinToken(%q): %v", tok.Id, err)
	}
}

func listTokens(t *testing.T, s store.Store) []*typesv1.JoinToken {
	t.Helper()
	toks, err := s.ListJoinTokens(t.Context())
	if err != nil {
		t.Fatalf("ListJoinTokens: %v", err)
	}
	slices.SortFunc(toks, func(a, b *typesv1.JoinToken) int { return strings.Compare(a.Id, b.Id) })
	return toks
}

func testCreateJoinToken(t *testing.T, s store.Store) {
	tok := newToken("0123456789abcdef01234567", 10*time.Minute)
	createToken(t, s, tok)
	other := newToken(tok.Id, time.Hour)
	other.SecretHash = secretHash("another secret")
	wantErrIs(t, s.CreateJoinToken(t.Context(), other), store.ErrAlreadyExists, "second CreateJoinToken")
	if diff := protoDiff([]*typesv1.JoinToken{tok}, listTokens(t, s)); diff != "" {
		t.Errorf("tokens (-want +got):\n%s", diff)
	}
}

func testUseJoinToken(t *testing.T, s store.Store) {
	const agent = "spiffe://example.org/nhid/agent/join_token/tok"
	tests := []struct {
		name    string
		id      string
		secret  string
		now     time.Time
		wantErr error
	}{
		{"first use succeeds", "tok", "secret-of-tok", tokenEpoch.Add(time.Minute), nil},
		{"second use is refused", "tok", "secret-of-tok", tokenEpoch.Add(2 * time.Minute), store.ErrTokenUsed},
		{"expired token is refused", "old", "secret-of-old", tokenEpoch.Add(11 * time.Minute), store.ErrTokenExpired},
		{"unknown token is not found", "nope", "secret-of-nope", tokenEpoch, store.ErrNotFound},
		{"wrong secret is invalid", "other", "guess", tokenEpoch, store.ErrTokenInvalid},
		{"used token with a wrong secret is invalid", "tok", "guess", tokenEpoch, store.ErrTokenInvalid},
	}
	for _, id := range []string{"tok", "old", "other"} {
		createToken(t, s, newToken(id, 10*time.Minute))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.UseJoinToken(t.Context(), tc.id, secretHash(tc.secret), agent, tc.now)
			if tc.wantErr != nil {
				wantErrIs(t, err, tc.wantErr, "UseJoinToken")
				if got != nil {
					t.Errorf("a refused use returned a token: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("UseJoinToken: %v", err)
			}
			want := newToken(tc.id, 10*time.Minute)
			want.UsedAt, want.UsedBy = tc.now.Unix(), agent
			if diff := protoDiff(want, got); diff != "" {
				t.Errorf("used token (-want +got):\n%s", diff)
			}
		})
	}
	for _, tok := range listTokens(t, s) {
		if used := tok.UsedAt != 0; used != (tok.Id == "tok") {
			t.Errorf("token %q used_at = %d; only %q may be used", tok.Id, tok.UsedAt, "tok")
		}
	}
}

func testGetJoinToken(t *testing.T, s store.Store) {
	fixed := newToken("fixed", 10*time.Minute)
	fixed.SpiffeId = "spiffe://example.org/nhid/agent/fixed/a"
	used := newToken("used", 10*time.Minute)
	for _, tok := range []*typesv1.JoinToken{fixed, used, newToken("deleted", time.Minute)} {
		createToken(t, s, tok)
	}
	usedAt := tokenEpoch.Add(time.Minute)
	const agent = "spiffe://example.org/nhid/agent/join_token/used"
	if _, err := s.UseJoinToken(t.Context(), "used", used.SecretHash, agent, usedAt); err != nil {
		t.Fatalf("UseJoinToken: %v", err)
	}
	must(t, "DeleteJoinToken", s.DeleteJoinToken(t.Context(), "deleted"))
	wantUsed := proto.Clone(used).(*typesv1.JoinToken)
	wantUsed.UsedAt, wantUsed.UsedBy = usedAt.Unix(), agent

	tests := []struct {
		name    string
		id      string
		want    *typesv1.JoinToken
		wantErr error
	}{
		{"unused token with a fixed agent ID", "fixed", fixed, nil},
		{"used token shows its use", "used", wantUsed, nil},
		{"unknown id is not found", "nope", nil, store.ErrNotFound},
		{"deleted token is not found", "deleted", nil, store.ErrNotFound},
		{"empty id is not found", "", nil, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.GetJoinToken(t.Context(), tc.id)
			if tc.wantErr != nil {
				wantErrIs(t, err, tc.wantErr, "GetJoinToken")
				if got != nil {
					t.Errorf("a failed GetJoinToken returned a token: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("GetJoinToken(%q): %v", tc.id, err)
			}
			if diff := protoDiff(tc.want, got); diff != "" {
				t.Errorf("token (-want +got):\n%s", diff)
			}
		})
	}
}

func testGetJoinTokenIsolation(t *testing.T, s store.Store) {
	tok := newToken("tok", 10*time.Minute)
	want := proto.Clone(tok).(*typesv1.JoinToken)
	createToken(t, s, tok)
	got, err := s.GetJoinToken(t.Context(), "tok")
	if err != nil {
		t.Fatalf("GetJoinToken: %v", err)
	}
	got.SecretHash[0] ^= 0xff
	got.UsedAt, got.UsedBy, got.ExpiresAt = 1, "spiffe://example.org/evil", 1
	again, err := s.GetJoinToken(t.Context(), "tok")
	if err != nil {
		t.Fatalf("second GetJoinToken: %v", err)
	}
	if diff := protoDiff(want, again); diff != "" {
		t.Errorf("stored token changed through a returned copy (-want +got):\n%s", diff)
	}
	if _, err := s.UseJoinToken(t.Context(), "tok", want.SecretHash, "spiffe://example.org/a", tokenEpoch); err != nil {
		t.Errorf("UseJoinToken after the returned copy was changed: %v", err)
	}
}

func testUseJoinTokenWrongSecret(t *testing.T, s store.Store) {
	tok := newToken("tok", 10*time.Minute)
	createToken(t, s, tok)
	for _, hash := range [][]byte{secretHash("wrong"), nil, tok.SecretHash[:16]} {
		_, err := s.UseJoinToken(t.Context(), "tok", hash, "spiffe://example.org/a", tokenEpoch)
		wantErrIs(t, err, store.ErrTokenInvalid, "UseJoinToken with a wrong secret")
	}
	if diff := protoDiff([]*typesv1.JoinToken{tok}, listTokens(t, s)); diff != "" {
		t.Errorf("refused uses changed the token (-want +got):\n%s", diff)
	}
	if _, err := s.UseJoinToken(t.Context(), "tok", tok.SecretHash, "spiffe://example.org/a", tokenEpoch); err != nil {
		t.Errorf("UseJoinToken with the right secret after wrong ones: %v", err)
	}
}

func testListJoinTokens(t *testing.T, s store.Store) {
	if toks := listTokens(t, s); len(toks) != 0 {
		t.Fatalf("empty store lists %d tokens", len(toks))
	}
	var want []*typesv1.JoinToken
	for _, id := range []string{"c", "a", "b"} {
		tok := newToken(id, time.Hour)
		tok.SpiffeId = "spiffe://example.org/nhid/agent/fixed/" + id
		createToken(t, s, tok)
		want = append(want, proto.Clone(tok).(*typesv1.JoinToken))
	}
	slices.SortFunc(want, func(a, b *typesv1.JoinToken) int { return strings.Compare(a.Id, b.Id) })
	if diff := protoDiff(want, listTokens(t, s)); diff != "" {
		t.Errorf("tokens (-want +got):\n%s", diff)
	}
}

func testDeleteJoinToken(t *testing.T, s store.Store) {
	tok := newToken("tok", time.Hour)
	createToken(t, s, tok)
	if err := s.DeleteJoinToken(t.Context(), "tok"); err != nil {
		t.Fatalf("DeleteJoinToken: %v", err)
	}
	_, err := s.UseJoinToken(t.Context(), "tok", tok.SecretHash, "spiffe://example.org/a", tokenEpoch)
	wantErrIs(t, err, store.ErrNotFound, "UseJoinToken after delete")
	wantErrIs(t, s.DeleteJoinToken(t.Context(), "tok"), store.ErrNotFound, "second DeleteJoinToken")
}

func testPruneJoinTokens(t *testing.T, s store.Store) {
	createToken(t, s, newToken("one-minute", time.Minute))
	createToken(t, s, newToken("five-minutes", 5*time.Minute))
	keep := newToken("ten-minutes", 10*time.Minute)
	createToken(t, s, keep)
	n, err := s.PruneJoinTokens(t.Context(), tokenEpoch.Add(6*time.Minute))
	if err != nil || n != 2 {
		t.Fatalf("PruneJoinTokens = %d, %v; want 2", n, err)
	}
	if diff := protoDiff([]*typesv1.JoinToken{keep}, listTokens(t, s)); diff != "" {
		t.Errorf("tokens left (-want +got):\n%s", diff)
	}
	if n, err := s.PruneJoinTokens(t.Context(), tokenEpoch.Add(6*time.Minute)); err != nil || n != 0 {
		t.Errorf("second PruneJoinTokens = %d, %v; want 0", n, err)
	}
}
