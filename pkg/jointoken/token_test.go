package jointoken

import (
	"bytes"
	"crypto/sha256"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var tokenPattern = regexp.MustCompile(`^[0-9a-f]{24}\.[A-Za-z0-9_-]{43}$`)

func generate(t *testing.T) Token {
	t.Helper()
	tok, err := Generate()
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return tok
}

func TestGenerate_MakesWellFormedDistinctTokens(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok := generate(t)
		if !tokenPattern.MatchString(tok.String()) {
			t.Fatalf("token %q does not match %s", tok, tokenPattern)
		}
		if seen[tok.ID] || seen[tok.Secret] {
			t.Fatalf("Generate repeated a value")
		}
		seen[tok.ID], seen[tok.Secret] = true, true

		parsed, err := Parse(tok.String())
		if err != nil {
			t.Fatalf("Parse(Generate()): %v", err)
		}
		if diff := cmp.Diff(tok, parsed); diff != "" {
			t.Fatalf("round trip (-generated +parsed):\n%s", diff)
		}
	}
}

func TestToken_SecretHashIsSHA256OfTheSecret(t *testing.T) {
	tok := generate(t)
	want := sha256.Sum256([]byte(tok.Secret))
	if diff := cmp.Diff(want[:], tok.SecretHash()); diff != "" {
		t.Errorf("SecretHash (-want +got):\n%s", diff)
	}
}

func TestToken_LogValueHidesTheSecret(t *testing.T) {
	tok := generate(t)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("issued", "token", tok)
	if strings.Contains(buf.String(), tok.Secret) {
		t.Errorf("log line contains the secret: %s", buf.String())
	}
	if !strings.Contains(buf.String(), tok.ID) {
		t.Errorf("log line lacks the token id: %s", buf.String())
	}
}

func TestParse_RejectsMalformedTokens(t *testing.T) {
	good := generate(t)
	id, secret := good.ID, good.Secret
	// A 43-character secret whose last character carries non-zero padding
	// bits: base64-decodable by lax decoders, but not canonical.
	nonCanonical := secret[:42] + "B"
	if secret[42] == 'B' {
		nonCanonical = secret[:42] + "C"
	}
	tests := []struct {
		name, in, wantErr string
	}{
		{"empty", "", "must be 68 characters"},
		{"secret only", secret, "must be 68 characters"},
		{"trailing newline", good.String() + "\n", "must be 68 characters"},
		{"no dot", id + "x" + secret, "a dot"},
		{"dot in the wrong place", id[:23] + "." + id[23:] + secret, "a dot"},
		{"uppercase id", strings.ToUpper(id) + "." + secret, "id: must be 24 lowercase hex"},
		{"non-hex id", "g" + id[1:] + "." + secret, "id: must be 24 lowercase hex"},
		{"standard base64 in secret", id + "." + "+" + secret[1:], "secret: must be 43 base64url"},
		{"padding in secret", id + "." + secret[:42] + "=", "secret: must be 43 base64url"},
		{"second dot in secret", id + "." + secret[:42] + ".", "secret: must be 43 base64url"},
		{"non-canonical secret", id + "." + nonCanonical, "secret: must be 43 base64url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse accepted %q", tt.in)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), secret[:16]) {
				t.Errorf("err %q echoes the secret", err)
			}
		})
	}
}
