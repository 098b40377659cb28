package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header names of a webhook delivery.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256, keyed by the
	// shared secret, of the timestamp header, a dot and the body.
	HeaderSignature = "X-Nhid-Signature"
	// HeaderTimestamp is the unix time (seconds) the attempt was signed.
	HeaderTimestamp = "X-Nhid-Timestamp"
	// HeaderDelivery is the notification's id; it is the same on every
	// attempt, so a receiver can drop duplicates.
	HeaderDelivery = "X-Nhid-Delivery"
)

// signaturePrefix names the MAC algorithm in HeaderSignature.
const signaturePrefix = "sha256="

// DefaultVerifyTolerance is how far a delivery's timestamp may be from
// the receiver's clock for Verify; older deliveries may be replays.
const DefaultVerifyTolerance = 5 * time.Minute

// ErrBadSignature is returned by Verify for every delivery it refuses.
var ErrBadSignature = errors.New("webhook signature does not verify")

// Sign returns the HeaderSignature value of body signed at timestamp (the
// HeaderTimestamp value).
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a delivery as its receiver should: the signature header
// must be the HMAC of timestamp "." body under secret, compared in
// constant time, and the timestamp within tolerance of now (0 means
// DefaultVerifyTolerance), so that a captured delivery cannot be replayed
// later. Every failure wraps ErrBadSignature.
func Verify(secret []byte, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultVerifyTolerance
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not a unix time", ErrBadSignature, HeaderTimestamp, timestamp)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp is %v away from now, more than %v", ErrBadSignature, d.Round(time.Second), tolerance)
	}
	hexMAC, ok := strings.CutPrefix(signature, signaturePrefix)
	if !ok {
		return fmt.Errorf("%w: %s does not start with %q", ErrBadSignature, HeaderSignature, signaturePrefix)
	}
	got, err := hex.DecodeString(hexMAC)
	if err != nil {
		return fmt.Errorf("%w: %s is not hex", ErrBadSignature, HeaderSignature)
	}
	want, _ := hex.DecodeString(strings.TrimPrefix(Sign(secret, timestamp, body), signaturePrefix))
	if !hmac.Equal(got, want) {
		return fmt.Errorf("%w: MAC mismatch", ErrBadSignature)
	}
	return nil
}
