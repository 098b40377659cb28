package adminapi

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/jointoken"
	"github.com/nhid/nhid/pkg/store"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

// splitToken undoes Token.String.
func splitToken(t *testing.T, s string) jointoken.Token {
	t.Helper()
	tok, err := jointoken.Parse(s)
	if err != nil {
		t.Fatalf("generated token does not parse: %v", err)
	}
	return tok
}

func TestGenerateToken_StoresOnlyTheHashAndIsUsableOnce(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	resp, err := h.tokens.GenerateToken(testCtx(t), &adminv1.GenerateTokenRequest{})
	if err != nil {
		t.Fatalf("GenerateToken: %v", err)
	}
	tok := splitToken(t, resp.GetToken())
	want := &adminv1.GenerateTokenResponse{
		Token:     resp.GetToken(),
		SpiffeId:  "spiffe://example.org/nhid/agent/join_token/" + tok.ID,
		Id:        tok.ID,
		ExpiresAt: testNow.Add(DefaultTokenTTL).Unix(),
	}
	if diff := cmp.Diff(want, resp, protocmp.Transform()); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	stored, err := h.store.ListJoinTokens(testCtx(t))
	if err != nil || len(stored) != 1 {
		t.Fatalf("ListJoinTokens = %v, %v; want one token", stored, err)
	}
	if string(stored[0].GetSecretHash()) != string(tok.SecretHash()) || stored[0].GetSpiffeId() != "" ||
		stored[0].GetCreatedAt() != testNow.Unix() {
		t.Errorf("stored token = %v, want the secret's hash, no fixed ID, created now", stored[0])
	}
	if strings.Contains(string(stored[0].GetSecretHash()), tok.Secret) {
		t.Error("the store holds the secret itself")
	}
	if _, err := h.store.UseJoinToken(testCtx(t), tok.ID, tok.SecretHash(), resp.GetSpiffeId(), testNow); err != nil {
		t.Errorf("first use of the token: %v", err)
	}
	if _, err := h.store.UseJoinToken(testCtx(t), tok.ID, tok.SecretHash(), resp.GetSpiffeId(), testNow); !errors.Is(err, store.ErrTokenUsed) {
		t.Errorf("second use of the token = %v, want ErrTokenUsed", err)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, `"token_id":"`+tok.ID+`"`) || !strings.Contains(logs, "GenerateToken") {
		t.Errorf("generation not audited:\n%s", logs)
	}
	if strings.Contains(logs, tok.Secret) {
		t.Errorf("the log holds the token secret:\n%s", logs)
	}
}

func TestGenerateToken_TTLAndFixedAgentID(t *testing.T) {
	tests := []struct {
		name     string
		req      *adminv1.GenerateTokenRequest
		wantID   string // "" = derived from the token id
		wantTTL  time.Duration
		wantCode codes.Code
		wantMsg  string
	}{
		{"explicit ttl", &adminv1.GenerateTokenRequest{Ttl: 3600}, "", time.Hour, codes.OK, ""},
		{"maximum ttl", &adminv1.GenerateTokenRequest{Ttl: int32(MaxTokenTTL / time.Second)}, "", MaxTokenTTL, codes.OK, ""},
		{"fixed agent ID", &adminv1.GenerateTokenRequest{SpiffeId: "spiffe://example.org/nhid/agent/join_token/db-1"},
			"spiffe://example.org/nhid/agent/join_token/db-1", DefaultTokenTTL, codes.OK, ""},
		{"negative ttl", &adminv1.GenerateTokenRequest{Ttl: -1}, "", 0, codes.InvalidArgument, "ttl: "},
		{"ttl above the maximum", &adminv1.GenerateTokenRequest{Ttl: int32(MaxTokenTTL/time.Second) + 1}, "", 0, codes.InvalidArgument, "ttl: "},
		{"malformed spiffe_id", &adminv1.GenerateTokenRequest{SpiffeId: "spiffe://example.org/a//b"}, "", 0, codes.InvalidArgument, "spiffe_id: "},
		{"spiffe_id in another trust domain", &adminv1.GenerateTokenRequest{SpiffeId: "spiffe://other.org/nhid/agent/x/y"}, "", 0, codes.InvalidArgument, "spiffe_id: "},
		{"spiffe_id outside the agent namespace", &adminv1.GenerateTokenRequest{SpiffeId: "spiffe://example.org/db-1"}, "", 0, codes.InvalidArgument, "spiffe_id: "},
		{"server ID as agent ID", &adminv1.GenerateTokenRequest{SpiffeId: "spiffe://example.org/nhid/server"}, "", 0, codes.InvalidArgument, "spiffe_id: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			resp, err := h.tokens.GenerateToken(testCtx(t), tt.req)
			requireCode(t, err, tt.wantCode, tt.wantMsg)
			stored, lerr := h.store.ListJoinTokens(testCtx(t))
			if lerr != nil {
				t.Fatalf("ListJoinTokens: %v", lerr)
			}
			if tt.wantCode != codes.OK {
				if len(stored) != 0 {
					t.Errorf("refused request stored %d tokens", len(stored))
				}
				return
			}
			wantID := tt.wantID
			if wantID == "" {
				wantID = "spiffe://example.org/nhid/agent/join_token/" + resp.GetId()
			}
			if resp.GetSpiffeId() != wantID || resp.GetExpiresAt() != testNow.Add(tt.wantTTL).Unix() {
				t.Errorf("response = %v, want spiffe_id %s expiring after %v", resp, wantID, tt.wantTTL)
			}
			if len(stored) != 1 || stored[0].GetSpiffeId() != tt.wantID {
				t.Errorf("stored tokens = %v, want one with fixed spiffe_id %q", stored, tt.wantID)
			}
		})
	}
}

func TestGenerateToken_IDCollisionIsAlreadyExists(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	fixed, err := jointoken.Generate()
	if err != nil {
		t.Fatal(err)
	}
	h.svc.generateToken = func() (jointoken.Token, error) { return fixed, nil }
	if _, err := h.tokens.GenerateToken(testCtx(t), &adminv1.GenerateTokenRequest{}); err != nil {
		t.Fatalf("first GenerateToken: %v", err)
	}
	_, err = h.tokens.GenerateToken(testCtx(t), &adminv1.GenerateTokenRequest{})
	requireCode(t, err, codes.AlreadyExists)
}

func TestListTokens_NeverShowsSecrets(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	a, err := h.tokens.GenerateToken(testCtx(t), &adminv1.GenerateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.tokens.GenerateToken(testCtx(t), &adminv1.GenerateTokenRequest{SpiffeId: agentB, Ttl: 60})
	if err != nil {
		t.Fatal(err)
	}
	tokB := splitToken(t, b.GetToken())
	if _, err := h.store.UseJoinToken(testCtx(t), tokB.ID, tokB.SecretHash(), agentB, testNow); err != nil {
		t.Fatal(err)
	}
	resp, err := h.tokens.ListTokens(testCtx(t), &adminv1.ListTokensRequest{})
	if err != nil {
		t.Fatalf("ListTokens: %v", err)
	}
	want := []*adminv1.TokenInfo{
		{Id: a.GetId(), SpiffeId: a.GetSpiffeId(), ExpiresAt: a.GetExpiresAt(), CreatedAt: testNow.Unix()},
		{Id: b.GetId(), SpiffeId: agentB, ExpiresAt: b.GetExpiresAt(), CreatedAt: testNow.Unix(), UsedAt: testNow.Unix(), UsedBy: agentB},
	}
	if diff := cmp.Diff(sortedTokens(want), sortedTokens(resp.GetTokens()), protocmp.Transform()); diff != "" {
		t.Errorf("tokens (-want +got):\n%s", diff)
	}
	text := protojson.Format(resp)
	for _, secret := range []string{splitToken(t, a.GetToken()).Secret, tokB.Secret} {
		if strings.Contains(text, secret) {
			t.Errorf("listing holds a secret: %s", text)
		}
	}
}

func sortedTokens(ts []*adminv1.TokenInfo) []*adminv1.TokenInfo {
	out := slices.Clone(ts)
	slices.SortFunc(out, func(a, b *adminv1.TokenInfo) int { return strings.Compare(a.GetId(), b.GetId()) })
	return out
}

func TestRevokeToken(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	gen, err := h.tokens.GenerateToken(testCtx(t), &adminv1.GenerateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tok := splitToken(t, gen.GetToken())

	_, err = h.tokens.RevokeToken(testCtx(t), &adminv1.RevokeTokenRequest{Id: gen.GetToken()})
	requireCode(t, err, codes.InvalidArgument, "id: ")
	if st := err.Error(); strings.Contains(st, tok.Secret) {
		t.Errorf("error echoes the secret: %s", st)
	}
	for _, bad := range []string{"", strings.Repeat("a", 65)} {
		_, err = h.tokens.RevokeToken(testCtx(t), &adminv1.RevokeTokenRequest{Id: bad})
		requireCode(t, err, codes.InvalidArgument, "id: ")
	}

	if _, err := h.tokens.RevokeToken(testCtx(t), &adminv1.RevokeTokenRequest{Id: tok.ID}); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	if _, err := h.store.UseJoinToken(testCtx(t), tok.ID, tok.SecretHash(), agentA, testNow); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("using a revoked token = %v, want ErrNotFound", err)
	}
	_, err = h.tokens.RevokeToken(testCtx(t), &adminv1.RevokeTokenRequest{Id: tok.ID})
	requireCode(t, err, codes.NotFound)
	if logs := h.logs.String(); !strings.Contains(logs, "RevokeToken") || strings.Contains(logs, tok.Secret) {
		t.Errorf("revocation not audited, or secret logged:\n%s", logs)
	}
}
