package notify

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestVerify_RefusesTamperingReplaysAndMalformedHeaders(t *testing.T) {
	now := time.Unix(1_790_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`{"id":"x","type":"reputation.alert"}`)
	sig := Sign(secret, ts, body)
	if err := Verify(secret, ts, sig, body, now, 0); err != nil {
		t.Fatalf("a good delivery: %v", err)
	}
	old := strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10)
	tests := []struct {
		name           string
		secret         []byte
		ts, sig        string
		body           []byte
		wantErrContain string
	}{
		{"tampered body", secret, ts, sig, []byte(`{"id":"y","type":"reputation.alert"}`), "MAC mismatch"},
		{"other secret", []byte("another secret of at least 32 bytes!"), ts, sig, body, "MAC mismatch"},
		{"timestamp changed", secret, strconv.FormatInt(now.Unix()+1, 10), sig, body, "MAC mismatch"},
		{"replayed later", secret, old, Sign(secret, old, body), body, "away from now"},
		{"no prefix", secret, ts, sig[len("sha256="):], body, "does not start with"},
		{"not hex", secret, ts, "sha256=zz", body, "not hex"},
		{"bad timestamp", secret, "yesterday", sig, body, "not a unix time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.secret, tt.ts, tt.sig, tt.body, now, 0)
			if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), tt.wantErrContain) {
				t.Fatalf("Verify = %v, want ErrBadSignature saying %q", err, tt.wantErrContain)
			}
		})
	}
}
