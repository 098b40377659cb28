package jointoken

import (
	"context"
	"errors"
	tokenfmt "github.com/nhid/nhid/pkg/jointoken"
	"strings"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/attestor"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestVerifier_RefusesBadTokensWithDistinctReasons(t *testing.T) {
	tests := []struct {
		name string
		// present returns the payload to attest and the token it is about.
		present    func(t *testing.T, f *fixture) (payload string, tok tokenfmt.Token)
		wantErr    error
		wantReason string
		wantUses   int32 // UseJoinToken calls: none where reading the token refuses it
	}{
		{
			name: "unknown",
			present: func(t *testing.T, f *fixture) (string, tokenfmt.Token) {
				tok := generate(t)
				return tok.String(), tok
			},
			wantErr: errUnknown, wantReason: "attestation failed: join token unknown", wantUses: 0,
		},
		{
			name: "already used",
			present: func(t *testing.T, f *fixture) (string, tokenfmt.Token) {
				tok := f.createToken(t, "")
				if _, err := f.attest(tok.String()); err != nil {
					t.Fatalf("first use: %v", err)
				}
				return tok.String(), tok
			},
			wantErr: errUsed, wantReason: "attestation failed: join token already used", wantUses: 2,
		},
		{
			name: "expired",
			present: func(t *testing.T, f *fixture) (string, tokenfmt.Token) {
				tok := f.createToken(t, "")
				f.clock.Add(tokenTTL + time.Second)
				return tok.String(), tok
			},
			wantErr: errExpired, wantReason: "attestation failed: join token expired", wantUses: 1,
		},
		{
			name: "wrong secret",
			present: func(t *testing.T, f *fixture) (string, tokenfmt.Token) {
				tok := f.createToken(t, "")
				return tokenfmt.Token{ID: tok.ID, Secret: generate(t).Secret}.String(), tok
			},
			wantErr: errInvalid, wantReason: "attestation failed: join token invalid", wantUses: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			payload, tok := tt.present(t, f)
			_, err := f.attest(payload)
			if !errors.Is(err, attestor.ErrAttestationFailed) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err.Error() != tt.wantReason {
				t.Errorf("err = %q, want %q", err, tt.wantReason)
			}
			if uses := f.uses.Load(); uses != tt.wantUses {
				t.Errorf("UseJoinToken called %d times, want %d", uses, tt.wantUses)
			}
			checkRefusalLogged(t, f.logs.String(), tok, payload)
		})
	}
}

// checkRefusalLogged requires a refusal line naming the token id, and no
// secret anywhere in the logs.
func checkRefusalLogged(t *testing.T, logs string, tok tokenfmt.Token, payload string) {
	t.Helper()
	if !strings.Contains(logs, "refused") || !strings.Contains(logs, "token_id="+tok.ID) {
		t.Errorf("logs lack a refusal with token_id=%s:\n%s", tok.ID, logs)
	}
	_, presented, _ := strings.Cut(payload, ".")
	for _, secret := range []string{tok.Secret, presented} {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret:\n%s", logs)
		}
	}
}

func TestVerifier_WrongSecretLeavesTokenUsable(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken(t, "")
	wrong := tokenfmt.Token{ID: tok.ID, Secret: generate(t).Secret}
	if _, err := f.attest(wrong.String()); !errors.Is(err, errInvalid) {
		t.Fatalf("wrong secret: err = %v, want %v", err, errInvalid)
	}
	if _, err := f.attest(tok.String()); err != nil {
		t.Fatalf("right secret after a wrong one: %v", err)
	}
}

func TestVerifier_RefusesMalformedPayloads(t *testing.T) {
	good := generate(t).String()
	payloads := map[string]string{
		"empty":            "",
		"truncated":        good[:60],
		"uppercase id":     strings.ToUpper(good[:24]) + good[24:],
		"trailing newline": good + "\n",
		"huge":             strings.Repeat("a", 1<<20),
	}
	f := newFixture(t)
	for name, payload := range payloads {
		t.Run(name, func(t *testing.T) {
			_, err := f.attest(payload)
			if !errors.Is(err, errMalformed) {
				t.Fatalf("err = %v, want %v", err, errMalformed)
			}
		})
	}
}

// A stored fixed ID the verifier cannot give is a server fault, not a
// verdict on the token: it is not reported as attestation failure, and the
// token is left unused.
func TestVerifier_UnusableStoredAgentIDIsAnInternalError(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken(t, "spiffe://other.org/nhid/agent/join_token/x")
	_, err := f.attest(tok.String())
	if err == nil || errors.Is(err, attestor.ErrAttestationFailed) {
		t.Fatalf("err = %v, want an internal error", err)
	}
	if !strings.Contains(err.Error(), "not in trust domain") {
		t.Errorf("err = %v, want it to say why", err)
	}
	if got := f.stored(t, tok.ID); got.GetUsedAt() != 0 || got.GetUsedBy() != "" {
		t.Errorf("token used at %d by %q after the refusal, want it unused", got.GetUsedAt(), got.GetUsedBy())
	}
}

func TestVerifier_StoreFailureIsNotAnAttestationVerdict(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken(t, "")
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := f.attest(tok.String())
	if err == nil || errors.Is(err, attestor.ErrAttestationFailed) {
		t.Fatalf("err = %v, want a store error that is not ErrAttestationFailed", err)
	}
}

func TestVerifier_CancelledContextLeavesTokenUnused(t *testing.T) {
	f := newFixture(t)
	tok := f.createToken(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.v.Attest(ctx, []byte(tok.String()), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := f.attest(tok.String()); err != nil {
		t.Fatalf("token unusable after a cancelled attempt: %v", err)
	}
}

func TestNewVerifier_RequiresTrustDomainAndStore(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		cfg     VerifierConfig
		wantErr string
	}{
		{"no trust domain", VerifierConfig{Tokens: f.store}, "TrustDomain"},
		{"no store", VerifierConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")}, "Tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVerifier(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestEvidence(t *testing.T) {
	tok := generate(t)
	ev, err := NewEvidence(tok.String())
	if err != nil {
		t.Fatalf("NewEvidence: %v", err)
	}
	if ev.Type() != tokenfmt.Type {
		t.Errorf("Type = %q, want %q", ev.Type(), tokenfmt.Type)
	}
	payload, err := ev.Evidence(context.Background())
	if err != nil || string(payload) != tok.String() {
		t.Errorf("Evidence = %q, %v; want the token", payload, err)
	}
	if _, err := ev.Respond(context.Background(), []byte("challenge")); err == nil {
		t.Error("Respond succeeded, want an error: join tokens have no challenge")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ev.Evidence(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Evidence(cancelled) err = %v, want context.Canceled", err)
	}
	if _, err := NewEvidence(tok.ID); err == nil || strings.Contains(err.Error(), tok.ID) {
		t.Errorf("NewEvidence(id only) err = %v, want a format error that does not echo input", err)
	}
}

func generate(t *testing.T) tokenfmt.Token {
	t.Helper()
	tok, err := tokenfmt.Generate()
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return tok
}
