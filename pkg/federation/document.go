package federation

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

// The JWK "use" values of the SVID types nhid reads from and writes to a
// bundle document (X509-SVID and JWT-SVID section 6). They are case
// sensitive (Trust Domain and Bundle section 4.2.2).
const (
	useX509SVID = "x509-svid"
	useJWTSVID  = "jwt-svid"
)

// bundleDocument is the SPIFFE bundle document (Trust Domain and Bundle
// section 4.1), members in the order go-spiffe writes them.
type bundleDocument struct {
	Keys     []jose.JSONWebKey `json:"keys"`
	Sequence *uint64           `json:"spiffe_sequence,omitempty"`
	Hint     *int64            `json:"spiffe_refresh_hint,omitempty"`
}

// marshalDocument encodes sb, whose sequence number is seq, with one
// x509-svid key per CA certificate (x5c of exactly that certificate, no
// kid: X509-SVID section 6.1) and one jwt-svid key per JWT authority
// (with its kid: JWT-SVID section 6.1) in key id order, so that one
// bundle is always one document, byte for byte.
func marshalDocument(seq uint64, sb *spiffebundle.Bundle, hint time.Duration) ([]byte, error) {
	x509s, jwts := sb.X509Authorities(), sb.JWTAuthorities()
	doc := bundleDocument{Keys: make([]jose.JSONWebKey, 0, len(x509s)+len(jwts)), Sequence: &seq}
	for _, c := range x509s {
		doc.Keys = append(doc.Keys, jose.JSONWebKey{Key: c.PublicKey, Certificates: []*x509.Certificate{c}, Use: useX509SVID})
	}
	for _, id := range slices.Sorted(maps.Keys(jwts)) {
		doc.Keys = append(doc.Keys, jose.JSONWebKey{Key: jwts[id], KeyID: id, Use: useJWTSVID})
	}
	if hint > 0 {
		secs := int64((hint + time.Second - 1) / time.Second)
		doc.Hint = &secs
	}
	return json.Marshal(doc)
}

// normalize prepares a partner's document for spiffebundle.Parse, which
// fails on what the specifications tell a client to skip. It drops every
// key a client MUST ignore: an unknown use or key type (Trust Domain and
// Bundle sections 4.1.3, 4.2.1, 4.2.2; nhid reads only x509-svid and
// jwt-svid keys) and an x509-svid key without x5c (X509-SVID section 6.2),
// keeps only the first certificate of x5c (ibid.), and returns the
// refresh hint bounded to maxDocumentHint. Malformed documents and keys
// of known type and use pass unchanged, for spiffebundle.Parse to refuse.
func normalize(doc []byte) ([]byte, int64, error) {
	var top map[string]json.RawMessage
	if json.Unmarshal(doc, &top) != nil || top == nil {
		return doc, 0, nil
	}
	hint, present, err := refreshHint(top["spiffe_refresh_hint"])
	if err != nil {
		return nil, 0, err
	}
	if present {
		top["spiffe_refresh_hint"] = json.RawMessage(strconv.FormatInt(hint, 10))
	}
	var keys []json.RawMessage
	if raw, ok := top["keys"]; ok && json.Unmarshal(raw, &keys) == nil && keys != nil {
		kept := make([]json.RawMessage, 0, len(keys))
		for _, k := range keys {
			if k, ok := admitKey(k); ok {
				kept = append(kept, k)
			}
		}
		if top["keys"], err = json.Marshal(kept); err != nil {
			return nil, 0, fmt.Errorf("bundle document: keys: %w", err)
		}
	}
	out, err := json.Marshal(top)
	if err != nil {
		return nil, 0, fmt.Errorf("bundle document: %w", err)
	}
	return out, hint, nil
}

// admitKey returns the JWK as nhid reads it, or false when a client must
// ignore it. A key that is not an object is left for the parser to refuse.
func admitKey(raw json.RawMessage) (json.RawMessage, bool) {
	var k map[string]json.RawMessage
	if json.Unmarshal(raw, &k) != nil || k == nil {
		return raw, true
	}
	use := member(k, "use")
	if use != useX509SVID && use != useJWTSVID {
		return nil, false
	}
	if !knownKeyType(member(k, "kty"), member(k, "crv")) {
		return nil, false
	}
	if use != useX509SVID {
		return raw, true
	}
	var certs []json.RawMessage
	if json.Unmarshal(k["x5c"], &certs) != nil || len(certs) == 0 {
		return nil, false
	}
	if len(certs) == 1 {
		return raw, true
	}
	first, err := json.Marshal(certs[:1])
	if err != nil {
		return raw, true
	}
	k["x5c"] = first
	out, err := json.Marshal(k)
	if err != nil {
		return raw, true
	}
	return out, true
}

// knownKeyType reports whether nhid can read a public key of this JWK
// type (RFC 7518 section 6, RFC 8037 section 2).
func knownKeyType(kty, crv string) bool {
	switch kty {
	case "RSA":
		return true
	case "EC":
		return crv == "P-256" || crv == "P-384" || crv == "P-521"
	case "OKP":
		return crv == "Ed25519"
	}
	return false
}

// member is a string member of a JSON object, "" when absent or not a
// string.
func member(obj map[string]json.RawMessage, name string) string {
	var s string
	if json.Unmarshal(obj[name], &s) != nil {
		return ""
	}
	return s
}

// refreshHint reads spiffe_refresh_hint as the document states it: an
// integer number of seconds (Trust Domain and Bundle section 4.1.2). It is
// only a hint, so a long one is bounded to maxDocumentHint rather than
// refused (it could not be a time.Duration otherwise; RefreshInterval
// bounds it further); a negative one is no interval at all.
func refreshHint(raw json.RawMessage) (int64, bool, error) {
	if raw == nil || string(bytes.TrimSpace(raw)) == "null" {
		return 0, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return 0, false, fmt.Errorf("bundle document: spiffe_refresh_hint: %w", err)
	}
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(n.String(), ".eE") {
		return 0, false, fmt.Errorf("bundle document: spiffe_refresh_hint %s is not an integer number of seconds", raw)
	}
	h, err := strconv.ParseInt(n.String(), 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		h, err = maxDocumentHint, nil
		if strings.HasPrefix(n.String(), "-") {
			h = -1
		}
	}
	if err != nil {
		return 0, false, fmt.Errorf("bundle document: spiffe_refresh_hint %s is not an integer number of seconds", raw)
	}
	if h < 0 {
		return 0, false, fmt.Errorf("bundle document: spiffe_refresh_hint %s is negative: it is a number of seconds", n)
	}
	return min(h, maxDocumentHint), true, nil
}
