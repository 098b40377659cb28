package federation

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Conformance of the documents nhid accepts from partners (SPIFFE Trust
// Domain and Bundle section 4, X509-SVID section 6.2) and serves.

// TestParse_IgnoresTheKeysTheSpecSaysToIgnore: a client MUST ignore a JWK
// of an unknown key type or use (Trust Domain and Bundle sections 4.1.3,
// 4.2.1, 4.2.2) and an x509-svid entry without x5c, and read only the
// first certificate of x5c (X509-SVID section 6.2); members it does not
// know are not required (section 4.1). The rest of the document counts.
func TestParse_IgnoresTheKeysTheSpecSaysToIgnore(t *testing.T) {
	ca, extra := newTestCA(t, partnerTD), newTestCA(t, partnerTD)
	good := document(t, partnerTD, 10*time.Minute, ca)
	ec := ecJWK(t)
	x5c := func(cas ...*testCA) []string {
		var out []string
		for _, c := range cas {
			out = append(out, base64.StdEncoding.EncodeToString(c.cert.Raw))
		}
		return out
	}
	extraJWK := ecJWKOf(t, extra)
	tests := []struct {
		name     string
		key      map[string]any
		top      map[string]any
		wantX509 []*testCA
	}{
		{"unknown use", with(ec, map[string]any{"use": "future-svid", "kid": "f"}), nil, []*testCA{ca}},
		{"use in another case", with(extraJWK, map[string]any{"use": "X509-SVID", "x5c": x5c(extra)}), nil, []*testCA{ca}},
		{"no use", with(ec, map[string]any{"kid": "n"}), nil, []*testCA{ca}},
		{"unknown use and key type", map[string]any{"use": "future-svid", "kty": "PQC", "pub": "AAAA"}, nil, []*testCA{ca}},
		{"unknown key type", map[string]any{"use": "jwt-svid", "kty": "PQC", "kid": "pq", "pub": "AAAA"}, nil, []*testCA{ca}},
		{"symmetric key", map[string]any{"use": "jwt-svid", "kty": "oct", "kid": "sym", "k": "c2VjcmV0"}, nil, []*testCA{ca}},
		{"unknown curve", with(ec, map[string]any{"use": "jwt-svid", "kid": "k1", "crv": "secp256k1"}), nil, []*testCA{ca}},
		{"x509-svid without x5c", with(extraJWK, map[string]any{"use": "x509-svid"}), nil, []*testCA{ca}},
		{"x509-svid with empty x5c", with(extraJWK, map[string]any{"use": "x509-svid", "x5c": []string{}}), nil, []*testCA{ca}},
		{"x5c with more than one certificate", with(extraJWK, map[string]any{"use": "x509-svid", "x5c": x5c(extra, ca)}), nil, []*testCA{ca, extra}},
		{"unknown document member", nil, map[string]any{"spiffe_future": map[string]any{"a": 1}}, []*testCA{ca}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := extend(t, good, tc.key, tc.top)
			got, err := Parse(partnerTD, doc)
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, doc)
			}
			var want [][]byte
			for _, c := range tc.wantX509 {
				want = append(want, c.cert.Raw)
			}
			if diff := cmp.Diff(want, authorities(got)); diff != "" {
				t.Errorf("X.509 authorities (-want +got):\n%s", diff)
			}
			if ids := jwtKeyIDs(got); !cmp.Equal(ids, []string{"jwt-1"}) || got.GetRefreshHint() != 600 {
				t.Errorf("JWT authorities %v, hint %d; want [jwt-1], 600", ids, got.GetRefreshHint())
			}
		})
	}
}

// TestParse_LongRefreshHintIsBoundedNotRefused: spiffe_refresh_hint is any
// integer number of seconds and only a hint (Trust Domain and Bundle
// section 4.1.2): a partner's long one is bounded, not a reason to refuse
// its keys. A negative one is no interval at all and stays refused.
func TestParse_LongRefreshHintIsBoundedNotRefused(t *testing.T) {
	good := document(t, partnerTD, 10*time.Minute, newTestCA(t, partnerTD))
	for _, tc := range []struct {
		hint     string
		want     int64
		wantErrs string
	}{
		{"31536001", maxDocumentHint, ""},
		{"99999999999", maxDocumentHint, ""},
		{"100000000000000000000", maxDocumentHint, ""},
		{"0", 0, ""},
		{"-5", 0, "spiffe_refresh_hint -5 is negative"},
		{"-100000000000000000000", 0, "is negative"},
		{"1.5", 0, "integer"},
	} {
		t.Run(tc.hint, func(t *testing.T) {
			doc := bytes.Replace(good, []byte(`"spiffe_refresh_hint":600`), []byte(`"spiffe_refresh_hint":`+tc.hint), 1)
			got, err := Parse(partnerTD, doc)
			if tc.wantErrs != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrs) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tc.wantErrs)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.GetRefreshHint() != tc.want {
				t.Errorf("refresh hint %d, want %d", got.GetRefreshHint(), tc.want)
			}
		})
	}
}

// TestMarshal_IsOneDocumentPerBundle: the same stored bundle always
// encodes to the same bytes (JWT keys by kid), so the endpoint, the admin
// API and nhidctl show one document.
func TestMarshal_IsOneDocumentPerBundle(t *testing.T) {
	b := &typesv1.Bundle{TrustDomain: partnerTD.Name(), SequenceNumber: 3,
		X509Authorities: []*typesv1.X509Authority{{Asn1: newTestCA(t, partnerTD).cert.Raw}}}
	for _, kid := range []string{"e", "b", "d", "a", "c", "f"} {
		der, err := x509.MarshalPKIXPublicKey(newKey(t).Public())
		if err != nil {
			t.Fatal(err)
		}
		b.JwtAuthorities = append(b.JwtAuthorities, &typesv1.JWTAuthority{KeyId: kid, PublicKey: der})
	}
	first, err := Marshal(b, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := Marshal(b, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, again) {
			t.Fatalf("two encodings differ:\n%s\n%s", first, again)
		}
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(first, &doc); err != nil {
		t.Fatal(err)
	}
	var order []any
	for _, k := range doc.Keys {
		if k["use"] == "x509-svid" && (k["kid"] != nil || len(k["x5c"].([]any)) != 1) {
			t.Errorf("x509-svid key %v: want exactly one x5c certificate and no kid (X509-SVID section 6.1)", k)
		}
		if k["use"] == "jwt-svid" {
			order = append(order, k["kid"])
		}
	}
	if diff := cmp.Diff([]any{"a", "b", "c", "d", "e", "f"}, order); diff != "" {
		t.Errorf("jwt-svid key order (-want +got):\n%s", diff)
	}
}

// ecJWK is a fresh P-256 public key as JWK members.
func ecJWK(t *testing.T) map[string]any {
	t.Helper()
	return jwkMembers(t, jose.JSONWebKey{Key: newKey(t).Public()})
}

// ecJWKOf is ca's public key as JWK members, to go with its x5c.
func ecJWKOf(t *testing.T, ca *testCA) map[string]any {
	t.Helper()
	return jwkMembers(t, jose.JSONWebKey{Key: ca.cert.PublicKey})
}

func jwkMembers(t *testing.T, k jose.JSONWebKey) map[string]any {
	t.Helper()
	raw, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// with is m with the members of set replaced or added.
func with(m, set map[string]any) map[string]any {
	out := make(map[string]any, len(m)+len(set))
	for k, v := range m {
		out[k] = v
	}
	for k, v := range set {
		out[k] = v
	}
	return out
}

// extend appends key (if any) to doc's keys and adds the top members.
func extend(t *testing.T, doc []byte, key, top map[string]any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	if key != nil {
		m["keys"] = append(m["keys"].([]any), key)
	}
	for k, v := range top {
		m[k] = v
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func jwtKeyIDs(b *typesv1.Bundle) []string {
	var ids []string
	for _, a := range b.GetJwtAuthorities() {
		ids = append(ids, a.GetKeyId())
	}
	return ids
}
