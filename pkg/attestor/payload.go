package attestor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// DecodePayload decodes JSON node attestation evidence into v strictly:
// at most maxBytes, exactly one JSON object, no field v does not know.
// Evidence comes from unauthenticated peers; anything looser would let a
// malformed or padded payload through to the verifier's checks.
func DecodePayload(data []byte, maxBytes int, v any) error {
	if len(data) > maxBytes {
		return fmt.Errorf("payload is %d bytes, more than %d", len(data), maxBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode payload: %w", err)
	}
	if dec.More() {
		return errors.New("payload has data after its JSON object")
	}
	return nil
}
