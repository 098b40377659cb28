package svid

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	testTD     = spiffeid.RequireTrustDomainFromString("example.org")
	testID     = spiffeid.RequireFromString("spiffe://example.org/workload/api")
	testNow    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	testSubjCA = pkix.Name{Organization: []string{"nhid"}, CommonName: "test CA"}

	oidSAN      = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 15}
)

type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t testing.TB, kt KeyType) testCA {
	t.Helper()
	key := mustKey(t, kt)
	tmpl, err := CATemplate(testTD, testSubjCA, key.Public(), mustSerial(t), testNow.Add(-time.Hour), testNow.Add(24*time.Hour))
	if err != nil {
		t.Fatalf("CATemplate: %v", err)
	}
	return testCA{cert: createCert(t, tmpl, tmpl, key.Public(), key), key: key}
}

func mustSerial(t testing.TB) *big.Int {
	t.Helper()
	s, err := NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate: %v", err)
	}
	return cert
}

func (ca testCA) signLeaf(t testing.TB, pub crypto.PublicKey, dnsNames []string) *x509.Certificate {
	t.Helper()
	tmpl, err := LeafTemplate(testID, pub, mustSerial(t), testNow.Add(-10*time.Second), testNow.Add(time.Hour), dnsNames)
	if err != nil {
		t.Fatalf("LeafTemplate: %v", err)
	}
	return createCert(t, tmpl, ca.cert, pub, ca.key)
}

func extension(cert *x509.Certificate, oid asn1.ObjectIdentifier) *pkix.Extension {
	for i := range cert.Extensions {
		if cert.Extensions[i].Id.Equal(oid) {
			return &cert.Extensions[i]
		}
	}
	return nil
}

func TestNewSerial_IsPositiveAnd128BitsAndUnique(t *testing.T) {
	seen := make(map[string]bool)
	for range 200 {
		s := mustSerial(t)
		if s.Sign() <= 0 || s.BitLen() > 128 {
			t.Fatalf("serial %s: want positive and at most 128 bits", s)
		}
		if seen[s.String()] {
			t.Fatalf("serial %s repeated", s)
		}
		seen[s.String()] = true
	}
}

// TestLeafTemplate_FollowsTheX509SVIDSpec signs a leaf for every key type
// under a CA of every key type and checks each rule of the standard.
func TestLeafTemplate_FollowsTheX509SVIDSpec(t *testing.T) {
	for _, caKT := range KeyTypes() {
		ca := newTestCA(t, caKT)
		for _, leafKT := range KeyTypes() {
			t.Run(string(caKT)+"/"+string(leafKT), func(t *testing.T) {
				leafKey := mustKey(t, leafKT)
				leaf := ca.signLeaf(t, leafKey.Public(), []string{"api.example.org", "*.svc.example.org"})

				bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{ca.cert})
				id, _, err := x509svid.ParseAndVerify([][]byte{leaf.Raw}, bundle, x509svid.WithTime(testNow))
				if err != nil {
					t.Fatalf("x509svid.ParseAndVerify: %v", err)
				}
				wantUsage := x509.KeyUsageDigitalSignature
				if leafKT == KeyTypeRSA2048 {
					wantUsage |= x509.KeyUsageKeyEncipherment
				}
				ski, err := SubjectKeyID(leafKey.Public())
				if err != nil {
					t.Fatal(err)
				}
				got := leafFacts(leaf)
				want := leafFactsT{
					ID: testID.String(), URIs: []string{testID.String()},
					DNSNames: []string{"api.example.org", "*.svc.example.org"},
					BCValid:  true, IsCA: false, KeyUsage: wantUsage,
					ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
					SubjectEmpty: true, SANCritical: true, KeyUsageCritical: true,
					SKI: ski, AKI: ca.cert.SubjectKeyId,
				}
				want.ID = id.String()
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("leaf (-want +got):\n%s", diff)
				}
			})
		}
	}
}

type leafFactsT struct {
	ID                        string
	URIs, DNSNames            []string
	BCValid, IsCA             bool
	KeyUsage                  x509.KeyUsage
	ExtKeyUsage               []x509.ExtKeyUsage
	SubjectEmpty, SANCritical bool
	KeyUsageCritical          bool
	SKI, AKI                  []byte
}

func leafFacts(c *x509.Certificate) leafFactsT {
	var uris []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	f := leafFactsT{
		ID: uris[0], URIs: uris, DNSNames: c.DNSNames,
		BCValid: c.BasicConstraintsValid, IsCA: c.IsCA, KeyUsage: c.KeyUsage, ExtKeyUsage: c.ExtKeyUsage,
		SubjectEmpty: len(c.Subject.Names) == 0 && string(c.RawSubject) == "\x30\x00",
		SKI:          c.SubjectKeyId, AKI: c.AuthorityKeyId,
	}
	if e := extension(c, oidSAN); e != nil {
		f.SANCritical = e.Critical
	}
	if e := extension(c, oidKeyUsage); e != nil {
		f.KeyUsageCritical = e.Critical
	}
	return f
}

func TestCATemplate_IsASigningCertificateForLeavesOnly(t *testing.T) {
	for _, kt := range KeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			ca := newTestCA(t, kt)
			c := ca.cert
			type caFacts struct {
				URIs                   []string
				BCValid, IsCA          bool
				MaxPathLen             int
				MaxPathLenZero         bool
				KeyUsage               x509.KeyUsage
				Subject                string
				SKIFromKey, SelfSigned bool
			}
			ski, _ := SubjectKeyID(ca.key.Public())
			got := caFacts{
				URIs: []string{c.URIs[0].String()}, BCValid: c.BasicConstraintsValid, IsCA: c.IsCA,
				MaxPathLen: c.MaxPathLen, MaxPathLenZero: c.MaxPathLenZero, KeyUsage: c.KeyUsage,
				Subject: c.Subject.String(), SKIFromKey: string(c.SubjectKeyId) == string(ski),
				SelfSigned: c.CheckSignatureFrom(c) == nil,
			}
			want := caFacts{
				URIs: []string{"spiffe://example.org"}, BCValid: true, IsCA: true,
				MaxPathLen: 0, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
				Subject: "CN=test CA,O=nhid", SKIFromKey: true, SelfSigned: true,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("CA certificate (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCATemplate_PathLenZeroStopsASubordinateCA shows why MaxPathLen is 0:
// a CA certificate signed by our CA does not verify.
func TestCATemplate_PathLenZeroStopsASubordinateCA(t *testing.T) {
	ca := newTestCA(t, KeyTypeECP256)
	subKey := mustKey(t, KeyTypeECP256)
	subTmpl, err := CATemplate(testTD, pkix.Name{CommonName: "sub"}, subKey.Public(), mustSerial(t), testNow.Add(-time.Hour), testNow.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sub := createCert(t, subTmpl, ca.cert, subKey.Public(), ca.key)
	leaf := testCA{cert: sub, key: subKey}.signLeaf(t, mustKey(t, KeyTypeECP256).Public(), nil)
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(ca.cert)
	inters.AddCert(sub)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: testNow})
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.TooManyIntermediates {
		t.Fatalf("Verify error = %v, want a path length (TooManyIntermediates) error", err)
	}
}

func TestLeafTemplate_RejectsBadInput(t *testing.T) {
	pub := mustKey(t, KeyTypeECP256).Public()
	serial := mustSerial(t)
	nb, na := testNow, testNow.Add(time.Hour)
	tests := []struct {
		name    string
		id      spiffeid.ID
		pub     crypto.PublicKey
		serial  *big.Int
		nb, na  time.Time
		dns     []string
		wantErr string
	}{
		{"empty id", spiffeid.ID{}, pub, serial, nb, na, nil, "id: SPIFFE ID is empty"},
		{"trust domain id without a path", testTD.ID(), pub, serial, nb, na, nil, "id: spiffe://example.org has no path"},
		{"id over 2048 bytes", spiffeid.RequireFromString("spiffe://example.org/" + strings.Repeat("a", 2049-21)), pub, serial, nb, na, nil, "id: SPIFFE ID is 2049 bytes, at most 2048 allowed"},
		{"missing key", testID, nil, serial, nb, na, nil, "public key: public key is missing"},
		{"nil serial", testID, pub, nil, nb, na, nil, "serial: must be a positive number"},
		{"negative serial", testID, pub, big.NewInt(-1), nb, na, nil, "serial: must be a positive number"},
		{"serial over 20 octets", testID, pub, new(big.Int).Lsh(big.NewInt(1), 200), nb, na, nil, "serial: longer than"},
		{"notAfter before notBefore", testID, pub, serial, na, nb, nil, "validity: notAfter"},
		{"bad DNS name", testID, pub, serial, nb, na, []string{"ok.example", "bad_name.example"}, `dns names[1] "bad_name.example"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LeafTemplate(tt.id, tt.pub, tt.serial, tt.nb, tt.na, tt.dns)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestCATemplate_RejectsBadInput(t *testing.T) {
	pub := mustKey(t, KeyTypeECP256).Public()
	tests := []struct {
		name    string
		td      spiffeid.TrustDomain
		subject pkix.Name
		wantErr string
	}{
		{"empty trust domain", spiffeid.TrustDomain{}, testSubjCA, "trust domain: empty"},
		{"empty subject", testTD, pkix.Name{}, "subject: a CA certificate needs a non-empty subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CATemplate(tt.td, tt.subject, pub, mustSerial(t), testNow, testNow.Add(time.Hour))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckDNSNames(t *testing.T) {
	tests := []struct {
		name    string
		names   []string
		wantErr string
	}{
		{"none", nil, ""},
		{"plain and wildcard", []string{"a.example.org", "*.example.org", "localhost", "x-1.y2"}, ""},
		{"empty", []string{""}, "empty"},
		{"trailing dot", []string{"a.example.org."}, "empty label"},
		{"underscore", []string{"a_b.example"}, `character '_'`},
		{"leading hyphen", []string{"-a.example"}, "starts or ends with a hyphen"},
		{"wildcard in the middle", []string{"a.*.example"}, `character '*'`},
		{"bare wildcard", []string{"*.org"}, "a wildcard needs at least two labels"},
		{"long label", []string{strings.Repeat("a", 64) + ".example"}, "label of 64 characters"},
		{"long name", []string{strings.Repeat("a.", 127) + "ab"}, "at most 253 allowed"},
		{"duplicate ignoring case", []string{"A.example", "a.example"}, "dns names[1] \"a.example\": duplicate"},
		{"too many", make([]string, 101), "101 given, at most 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkDNSNames(tt.names)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkDNSNames: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestSubjectKeyID_HashesTheSubjectPublicKeyBits checks the fast paths
// against RFC 7093 method 1 computed from the DER SubjectPublicKeyInfo.
func TestSubjectKeyID_HashesTheSubjectPublicKeyBits(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]crypto.PublicKey{"ed25519": edKey.Public()}
	for _, kt := range KeyTypes() {
		keys[string(kt)] = mustKey(t, kt).Public()
	}
	for name, pub := range keys {
		t.Run(name, func(t *testing.T) {
			der, err := x509.MarshalPKIXPublicKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			var spki struct {
				Algorithm        pkix.AlgorithmIdentifier
				SubjectPublicKey asn1.BitString
			}
			if _, err := asn1.Unmarshal(der, &spki); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(spki.SubjectPublicKey.Bytes)
			got, err := SubjectKeyID(pub)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(sum[:20], got); diff != "" {
				t.Fatalf("SubjectKeyID (-want +got):\n%s", diff)
			}
		})
	}
}
