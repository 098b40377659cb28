// Package jointoken owns the join-token format shared by the admin API
// (which generates tokens), the join-token attestor (which checks them) and
// the agent (which presents them). An operator generates a single-use token
// (nhidctl token generate), hands it to one agent, and the server accepts
// that agent once, within the token's lifetime.
//
// A token is "<id>.<secret>": id is 24 lowercase hex characters (12 random
// bytes; public, it names the token and by default the agent), secret is 43
// base64url characters without padding (32 random bytes). The server stores
// only SHA-256(secret).
package jointoken

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Type is the attestor type, and the attestor segment of agent IDs.
const Type = "join_token"

const (
	idBytes     = 12
	secretBytes = 32
	idLen       = 2 * idBytes // hex
	secretLen   = 43          // base64url of 32 bytes, unpadded
	// Len is the length of a token's text form.
	Len = idLen + 1 + secretLen
)

var secretEncoding = base64.RawURLEncoding.Strict()

// Token is a parsed join token.
type Token struct {
	// ID is the public part: it names the token in the store and in logs.
	ID string
	// Secret proves possession; it is never stored or logged.
	Secret string
}

// Generate makes a new random token.
func Generate() (Token, error) {
	var id [idBytes]byte
	var secret [secretBytes]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Token{}, fmt.Errorf("generate join token id: %w", err)
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return Token{}, fmt.Errorf("generate join token secret: %w", err)
	}
	return Token{ID: hex.EncodeToString(id[:]), Secret: secretEncoding.EncodeToString(secret[:])}, nil
}

// String returns the whole token, secret included: what the operator hands
// to the agent. Never log it; slog gets only the id (see LogValue).
func (t Token) String() string { return t.ID + "." + t.Secret }

// LogValue keeps the secret out of structured logs.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.ID) }

// SecretHash is SHA-256 of the secret, the only form the server stores.
func (t Token) SecretHash() []byte {
	sum := sha256.Sum256([]byte(t.Secret))
	return sum[:]
}

// Parse checks s is exactly "<24 lowercase hex>.<43 base64url>" and splits
// it. Its errors describe the expected form and never repeat the input, so
// they cannot leak a secret into logs.
func Parse(s string) (Token, error) {
	if len(s) != Len {
		return Token{}, fmt.Errorf("join token: must be %d characters (<24 hex id>.<43 base64url secret>), got %d", Len, len(s))
	}
	id, secret, ok := strings.Cut(s, ".")
	if !ok || len(id) != idLen {
		return Token{}, errors.New("join token: must be a 24-character id, a dot, and a 43-character secret")
	}
	if !isLowerHex(id) {
		return Token{}, errors.New("join token: id: must be 24 lowercase hex characters")
	}
	raw, err := secretEncoding.DecodeString(secret)
	if err != nil || len(raw) != secretBytes {
		return Token{}, errors.New("join token: secret: must be 43 base64url characters without padding")
	}
	return Token{ID: id, Secret: secret}, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
