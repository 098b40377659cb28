package svid

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// signLeafWithExtensions signs a leaf for testID carrying exts.
func (ca testCA) signLeafWithExtensions(t testing.TB, exts ...pkix.Extension) *x509.Certificate {
	t.Helper()
	pub := mustKey(t, KeyTypeECP256).Public()
	tmpl, err := LeafTemplate(testID, pub, mustSerial(t), testNow.Add(-10*time.Second), testNow.Add(time.Hour), nil)
	if err != nil {
		t.Fatalf("LeafTemplate: %v", err)
	}
	tmpl.ExtraExtensions = exts
	return createCert(t, tmpl, ca.cert, pub, ca.key)
}

func mustPurposeExtension(t testing.TB, p Purpose) pkix.Extension {
	t.Helper()
	ext, err := PurposeExtension(p)
	if err != nil {
		t.Fatalf("PurposeExtension: %v", err)
	}
	return ext
}

func TestPurposeOID_IsTheDocumentedUUIDArc(t *testing.T) {
	u := uuid.MustParse("8e78340c-3197-4780-bfc4-c0885b3c57ac")
	if u.Version() != 4 {
		t.Errorf("UUID version %d, want 4", u.Version())
	}
	want := "2.25." + new(big.Int).SetBytes(u[:]).String()
	if PurposeOID != want {
		t.Errorf("PurposeOID = %s, want %s", PurposeOID, want)
	}
	// X.690 §8.19: 2*40+25 = 0x69, then the arc in base 128.
	if got, want := hex.EncodeToString(purposeOIDDER), "69829cf89a838699ba9e81bfe2b09185d9f1af2c"; got != want {
		t.Errorf("DER content of PurposeOID = %s, want %s", got, want)
	}
}

// TestPurposeOID_CannotBeAGoExtensionID records why the purpose travels
// as an attribute inside subject directory attributes: a certificate whose
// extension OID has a 128-bit arc is rejected by crypto/x509, hence by
// go-spiffe and every Go TLS peer. Should Go ever accept it, this test
// says the constraint is gone.
func TestPurposeOID_CannotBeAGoExtensionID(t *testing.T) {
	ca := newTestCA(t, KeyTypeECP256)
	// A placeholder whose DER content is as long as PurposeOID's (20
	// octets), swapped for it after signing; parsing fails before any
	// signature check.
	placeholder := asn1.ObjectIdentifier{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}
	leaf := ca.signLeafWithExtensions(t, pkix.Extension{Id: placeholder, Value: []byte{0x05, 0x00}})
	oldTLV, err := asn1.Marshal(placeholder)
	if err != nil {
		t.Fatal(err)
	}
	newTLV := append([]byte{0x06, byte(len(purposeOIDDER))}, purposeOIDDER...)
	if len(oldTLV) != len(newTLV) {
		t.Fatalf("placeholder is %d bytes, PurposeOID %d", len(oldTLV), len(newTLV))
	}
	der := bytes.Replace(leaf.Raw, oldTLV, newTLV, 1)
	if _, err := x509.ParseCertificate(der); err == nil || !strings.Contains(err.Error(), "extension OID") {
		t.Fatalf("ParseCertificate with PurposeOID as an extension id: got %v, want the malformed OID error", err)
	}
}

func TestPurposeFromCertificate_RoundTripsThroughAVerifiedSVID(t *testing.T) {
	tests := []struct {
		name string
		p    Purpose
	}{
		{"typical", Purpose{EntryID: "0198f0b2-7c1e-7d3a-9b1c-2f4e5a6b7c8d", Purpose: "reconcile invoices nightly", Owner: "ana@example.org"}},
		{"no purpose or owner", Purpose{EntryID: "e1"}},
		{"unicode", Purpose{EntryID: "e2", Purpose: "résumé tri — 日本語 ✓", Owner: "Zoë Ünal"}},
		{"longest fields", Purpose{EntryID: strings.Repeat("i", MaxPurposeFieldBytes), Purpose: strings.Repeat("p", MaxPurposeFieldBytes), Owner: strings.Repeat("o", MaxPurposeFieldBytes)}},
	}
	for _, kt := range KeyTypes() {
		ca := newTestCA(t, kt)
		bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{ca.cert})
		for _, tt := range tests {
			t.Run(string(kt)+"/"+tt.name, func(t *testing.T) {
				leaf := ca.signLeafWithExtensions(t, mustPurposeExtension(t, tt.p))
				id, _, err := x509svid.ParseAndVerify([][]byte{leaf.Raw}, bundle, x509svid.WithTime(testNow))
				if err != nil || id != testID {
					t.Fatalf("x509svid.ParseAndVerify: %s, %v", id, err)
				}
				if err := leaf.CheckSignatureFrom(ca.cert); err != nil {
					t.Fatalf("CheckSignatureFrom the CA: %v", err)
				}
				ext := extension(leaf, oidSubjectDirectoryAttributes)
				if ext == nil || ext.Critical {
					t.Fatalf("subject directory attributes extension: %+v, want present and non-critical", ext)
				}
				got, ok, err := PurposeFromCertificate(leaf)
				if err != nil || !ok {
					t.Fatalf("PurposeFromCertificate: ok=%v err=%v", ok, err)
				}
				if diff := cmp.Diff(tt.p, got); diff != "" {
					t.Fatalf("purpose (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestPurposeFromCertificate_AbsentIsNotAnError(t *testing.T) {
	ca := newTestCA(t, KeyTypeECP256)
	other := pkix.Extension{Id: oidSubjectDirectoryAttributes, Value: sdaDER(t, attribute{oid: []byte{0x55, 0x04, 0x03}, values: [][]byte{utf8Value("x")}})}
	for name, leaf := range map[string]*x509.Certificate{
		"no extension":             ca.signLeafWithExtensions(t),
		"other attributes only":    ca.signLeafWithExtensions(t, other),
		"unrelated extension only": ca.signLeafWithExtensions(t, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{0x05, 0x00}}),
	} {
		t.Run(name, func(t *testing.T) {
			p, ok, err := PurposeFromCertificate(leaf)
			if err != nil || ok {
				t.Fatalf("PurposeFromCertificate = %+v, %v, %v; want not found, no error", p, ok, err)
			}
		})
	}
}

func TestPurposeFromCertificate_FindsItAmongOtherAttributesAndLaterVersions(t *testing.T) {
	ca := newTestCA(t, KeyTypeECP256)
	want := Purpose{EntryID: "e1", Purpose: "deploy", Owner: "bo@example.org"}
	tests := map[string][]attribute{
		"after another attribute": {
			{oid: []byte{0x55, 0x04, 0x03}, values: [][]byte{utf8Value("x")}},
			{oid: purposeOIDDER, values: [][]byte{purposeValue(1, "e1", "deploy", "bo@example.org")}},
		},
		"version 2 with an appended field": {
			{oid: purposeOIDDER, values: [][]byte{purposeValue(2, "e1", "deploy", "bo@example.org", "future")}},
		},
	}
	for name, attrs := range tests {
		t.Run(name, func(t *testing.T) {
			leaf := ca.signLeafWithExtensions(t, pkix.Extension{Id: oidSubjectDirectoryAttributes, Value: sdaDER(t, attrs...)})
			got, ok, err := PurposeFromCertificate(leaf)
			if err != nil || !ok {
				t.Fatalf("PurposeFromCertificate: ok=%v err=%v", ok, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("purpose (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPurposeFromCertificate_RejectsMalformedAttributes(t *testing.T) {
	ca := newTestCA(t, KeyTypeECP256)
	good := purposeValue(1, "e1", "p", "o")
	tests := []struct {
		name    string
		value   []byte
		wantErr string
	}{
		{"not a sequence", []byte{0x04, 0x00}, "malformed subject directory attributes"},
		{"attribute without values", sdaRaw(t, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(a *cryptobyte.Builder) {
				a.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(o *cryptobyte.Builder) { o.AddBytes(purposeOIDDER) })
			})
		}), "malformed attribute"},
		{"two values", sdaDER(t, attribute{oid: purposeOIDDER, values: [][]byte{good, good}}), "exactly one value"},
		{"twice", sdaDER(t, attribute{oid: purposeOIDDER, values: [][]byte{good}}, attribute{oid: purposeOIDDER, values: [][]byte{good}}), "more than one"},
		{"version 0", sdaDER(t, attribute{oid: purposeOIDDER, values: [][]byte{purposeValue(0, "e1", "p", "o")}}), "version 0"},
		{"missing owner", sdaDER(t, attribute{oid: purposeOIDDER, values: [][]byte{purposeValue(1, "e1", "p")}}), "malformed owner"},
		{"version 1 with trailing data", sdaDER(t, attribute{oid: purposeOIDDER, values: [][]byte{purposeValue(1, "e1", "p", "o", "x")}}), "trailing data"},
		{"empty entry id", sdaDER(t, attribute{oid: purposeOIDDER, values: [][]byte{purposeValue(1, "", "p", "o")}}), "entry id is empty"},
		{"invalid UTF-8", sdaDER(t, attribute{oid: purposeOIDDER, values: [][]byte{purposeValue(1, "e1", "\xff", "o")}}), "not valid UTF-8"},
		{"oversized owner", sdaDER(t, attribute{oid: purposeOIDDER, values: [][]byte{purposeValue(1, "e1", "p", strings.Repeat("o", MaxPurposeFieldBytes+1))}}), "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := ca.signLeafWithExtensions(t, pkix.Extension{Id: oidSubjectDirectoryAttributes, Value: tt.value})
			_, ok, err := PurposeFromCertificate(leaf)
			if err == nil || ok || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("PurposeFromCertificate: ok=%v err=%v, want an error containing %q", ok, err, tt.wantErr)
			}
		})
	}
}

func TestPurposeExtension_RejectsBadInput(t *testing.T) {
	tests := []struct {
		name    string
		p       Purpose
		wantErr string
	}{
		{"no entry id", Purpose{Purpose: "p", Owner: "o"}, "entry id is empty"},
		{"oversized purpose", Purpose{EntryID: "e", Purpose: strings.Repeat("p", MaxPurposeFieldBytes+1)}, "purpose is 1025 bytes"},
		{"invalid UTF-8 owner", Purpose{EntryID: "e", Owner: "\xc3\x28"}, "owner is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := PurposeExtension(tt.p); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("PurposeExtension: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestPurposeFromCertificate_NilCertificate(t *testing.T) {
	if _, _, err := PurposeFromCertificate(nil); err == nil {
		t.Fatal("PurposeFromCertificate(nil): want an error")
	}
}

// attribute is one Attribute of a hand-built subject directory attributes
// extension: its OID's content octets and its values' DER.
type attribute struct {
	oid    []byte
	values [][]byte
}

func sdaDER(t *testing.T, attrs ...attribute) []byte {
	t.Helper()
	return sdaRaw(t, func(b *cryptobyte.Builder) {
		for _, a := range attrs {
			b.AddASN1(cbasn1.SEQUENCE, func(ab *cryptobyte.Builder) {
				ab.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(o *cryptobyte.Builder) { o.AddBytes(a.oid) })
				ab.AddASN1(cbasn1.SET, func(set *cryptobyte.Builder) {
					for _, v := range a.values {
						set.AddBytes(v)
					}
				})
			})
		}
	})
}

func sdaRaw(t *testing.T, content func(*cryptobyte.Builder)) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, content)
	der, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// purposeValue encodes an NhidPurpose with the given version and fields.
func purposeValue(version int64, fields ...string) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(v *cryptobyte.Builder) {
		v.AddASN1Int64(version)
		for _, f := range fields {
			v.AddASN1(cbasn1.UTF8String, func(u *cryptobyte.Builder) { u.AddBytes([]byte(f)) })
		}
	})
	return b.BytesOrPanic()
}

func utf8Value(s string) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.UTF8String, func(u *cryptobyte.Builder) { u.AddBytes([]byte(s)) })
	return b.BytesOrPanic()
}

// BenchmarkPurposeExtension measures encoding, which every X.509-SVID
// signature pays, and reading it back.
//
//	go test -run '^$' -bench Purpose ./pkg/svid/
func BenchmarkPurposeExtension(b *testing.B) {
	p := Purpose{EntryID: "0198f0b2-7c1e-7d3a-9b1c-2f4e5a6b7c8d", Purpose: "reconcile invoices nightly", Owner: "ana@example.org"}
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := PurposeExtension(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("read", func(b *testing.B) {
		ca := newTestCA(b, KeyTypeECP256)
		leaf := ca.signLeafWithExtensions(b, mustPurposeExtension(b, p))
		for b.Loop() {
			if _, ok, err := PurposeFromCertificate(leaf); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
}

// TestPurposeExtension_EncodesLikeCryptobyte checks the hand-sized encoder
// against cryptobyte's for lengths across every DER length form.
func TestPurposeExtension_EncodesLikeCryptobyte(t *testing.T) {
	for _, n := range []int{0, 1, 100, 127, 128, 200, 255, 256, MaxPurposeFieldBytes} {
		p := Purpose{EntryID: "e" + strings.Repeat("i", max(n-1, 0)), Purpose: strings.Repeat("p", n), Owner: strings.Repeat("ö", n/2)}
		ext := mustPurposeExtension(t, p)
		want := sdaDER(t, attribute{oid: purposeOIDDER, values: [][]byte{purposeValue(PurposeVersion, p.EntryID, p.Purpose, p.Owner)}})
		if !bytes.Equal(ext.Value, want) {
			t.Fatalf("fields of %d bytes: encoded\n%x\nwant\n%x", n, ext.Value, want)
		}
	}
}
