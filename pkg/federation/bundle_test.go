package federation

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestParse_ChecksForeignDocuments(t *testing.T) {
	ca := newTestCA(t, partnerTD)
	good := document(t, partnerTD, 10*time.Minute, ca)
	leafKey := newKey(t)
	leaf := sign(t, &x509.Certificate{BasicConstraintsValid: true}, ca.cert, leafKey.Public(), ca.key)
	tests := []struct {
		name    string
		doc     []byte
		wantErr string
	}{
		{"good", good, ""},
		{"garbage", []byte("<html>hello</html>"), "unable to parse JWKS"},
		{"no keys", []byte(`{"keys":[]}`), "no X.509 authority"},
		{"keys missing", []byte(`{"spiffe_sequence":1}`), "no authorities found"},
		{"only JWT authorities", document(t, partnerTD, 0), "no X.509 authority"},
		{"other trust domain's CA", document(t, partnerTD, 0, newTestCA(t, ownTD)), `"spiffe://example.org" is not in trust domain "partner.test"`},
		{"leaf as authority", docWithCert(t, leaf), "not a CA certificate"},
		{"negative hint", bytes.Replace(good, []byte(`"spiffe_refresh_hint":600`), []byte(`"spiffe_refresh_hint":-5`), 1), "spiffe_refresh_hint -5 is negative"},
		{"oversized", append(bytes.Repeat([]byte(" "), MaxDocumentSize), good...), "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(partnerTD, tt.doc)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.GetTrustDomain() != "partner.test" || len(got.GetX509Authorities()) != 1 || len(got.GetJwtAuthorities()) != 1 ||
				got.GetRefreshHint() != 600 || got.GetSequenceNumber() != 0 {
				t.Errorf("parsed %v", got)
			}
		})
	}
}

// docWithCert is a document whose only X.509 authority is c.
func docWithCert(t *testing.T, c *x509.Certificate) []byte {
	t.Helper()
	b := &typesv1.Bundle{TrustDomain: partnerTD.Name(), X509Authorities: []*typesv1.X509Authority{{Asn1: c.Raw}}}
	doc, err := Marshal(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestMarshalParse_RoundTrip(t *testing.T) {
	ca1, ca2 := newTestCA(t, partnerTD), newTestCA(t, partnerTD)
	jwtKey, err := x509.MarshalPKIXPublicKey(newKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	in := &typesv1.Bundle{
		TrustDomain:     partnerTD.Name(),
		X509Authorities: []*typesv1.X509Authority{{Asn1: ca1.cert.Raw}, {Asn1: ca2.cert.Raw}},
		JwtAuthorities:  []*typesv1.JWTAuthority{{KeyId: "a", PublicKey: jwtKey}},
		RefreshHint:     120, SequenceNumber: 7,
	}
	doc, err := Marshal(in, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte(`"spiffe_sequence":7`)) || !bytes.Contains(doc, []byte(`"spiffe_refresh_hint":120`)) {
		t.Errorf("document lacks sequence or hint: %s", doc)
	}
	out, err := Parse(partnerTD, doc)
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(in).(*typesv1.Bundle)
	want.SequenceNumber = 0 // the store numbers what it keeps
	if diff := cmp.Diff(want, out, protocmp.Transform()); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if doc, _ := Marshal(in, time.Hour); !bytes.Contains(doc, []byte(`"spiffe_refresh_hint":3600`)) {
		t.Errorf("refresh hint override not published: %s", doc)
	}
	if _, err := ToSPIFFE(&typesv1.Bundle{TrustDomain: "partner.test", X509Authorities: []*typesv1.X509Authority{{Asn1: []byte("x")}}}); err == nil ||
		!strings.Contains(err.Error(), "x509_authorities[0]") {
		t.Errorf("ToSPIFFE of a corrupt authority: %v", err)
	}
}

func TestSameContent_IgnoresOrderAndSequence(t *testing.T) {
	ca1, ca2 := newTestCA(t, partnerTD), newTestCA(t, partnerTD)
	a := &typesv1.Bundle{TrustDomain: "partner.test", RefreshHint: 60, SequenceNumber: 1,
		X509Authorities: []*typesv1.X509Authority{{Asn1: ca1.cert.Raw}, {Asn1: ca2.cert.Raw}}}
	b := &typesv1.Bundle{TrustDomain: "partner.test", RefreshHint: 60, SequenceNumber: 9,
		X509Authorities: []*typesv1.X509Authority{{Asn1: ca2.cert.Raw}, {Asn1: ca1.cert.Raw}}}
	if !SameContent(a, b) {
		t.Error("same authorities in another order differ")
	}
	if !bytes.Equal(a.GetX509Authorities()[0].GetAsn1(), ca1.cert.Raw) {
		t.Error("SameContent reordered its argument")
	}
	b.RefreshHint = 61
	if SameContent(a, b) {
		t.Error("another refresh hint is the same content")
	}
}

func TestRefreshInterval_IsBounded(t *testing.T) {
	for hint, want := range map[int64]time.Duration{
		0: DefaultRefreshHint, 1: MinRefreshInterval, 600: 10 * time.Minute, 30 * 24 * 3600: MaxRefreshInterval,
	} {
		if got := RefreshInterval(&typesv1.Bundle{RefreshHint: hint}); got != want {
			t.Errorf("RefreshInterval(hint %d) = %v, want %v", hint, got, want)
		}
	}
}
