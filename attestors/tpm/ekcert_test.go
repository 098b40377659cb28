package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

var certNow = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

// testIssuer is a CA that signs certificates in unit tests.
type testIssuer struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newIssuer(t testing.TB, name string, parent *testIssuer) *testIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: certNow.Add(-time.Hour), NotAfter: certNow.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testIssuer{cert: cert, key: key}
}

func (i *testIssuer) issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.cert, pub, i.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var (
	rsaKeyOnce sync.Once
	rsaKeys    [2]*rsa.PrivateKey
)

// testRSAKeys are two RSA-2048 keys standing in for EKs, made once.
func testRSAKeys(t testing.TB) [2]*rsa.PrivateKey {
	t.Helper()
	rsaKeyOnce.Do(func() {
		for i := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[i] = k
		}
	})
	return rsaKeys
}

// directoryNameSAN is a SAN extension holding the TPM manufacturer, model
// and version as a directory name, as the TCG EK Credential Profile has.
func directoryNameSAN(t testing.TB, critical bool, extra ...asn1.RawValue) pkix.Extension {
	t.Helper()
	rdn := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:00001014"},
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 2}, Value: "swtpm"},
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 3}, Value: "id:20191023"},
	}}.ToRDNSequence()
	rdnDER, err := asn1.Marshal(rdn)
	if err != nil {
		t.Fatal(err)
	}
	names := append([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: rdnDER}}, extra...)
	value, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSubjectAltName, Critical: critical, Value: value}
}

func ekTemplate(exts ...pkix.Extension) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: big.NewInt(42), NotBefore: certNow.Add(-time.Minute), NotAfter: certNow.Add(time.Minute),
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidEKCertificate},
		ExtraExtensions:    exts,
	}
}

func TestVerifyCert_HandlesEKCertificateProfile(t *testing.T) {
	root := newIssuer(t, "manufacturer root", nil)
	intermediate := newIssuer(t, "manufacturer intermediate", root)
	stranger := newIssuer(t, "stranger", nil)
	keys := testRSAKeys(t)
	ek := &ekKey{key: &keys[0].PublicKey}
	trust := newEKTrust([]*x509.Certificate{root.cert, intermediate.cert}, nil)

	dns := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("tpm.example.org")}
	withEKU := func(tmpl *x509.Certificate, eku ...x509.ExtKeyUsage) *x509.Certificate {
		tmpl.UnknownExtKeyUsage, tmpl.ExtKeyUsage = nil, eku
		return tmpl
	}
	tests := []struct {
		name    string
		der     func() []byte
		wantErr string // "" accepts
	}{
		{"critical directory-name SAN and EK usage", func() []byte {
			return intermediate.issue(t, ekTemplate(directoryNameSAN(t, true)), ek.key)
		}, ""},
		{"issued by the root directly", func() []byte {
			return root.issue(t, ekTemplate(directoryNameSAN(t, true)), ek.key)
		}, ""},
		{"no extended key usage at all", func() []byte {
			return intermediate.issue(t, withEKU(ekTemplate()), ek.key)
		}, ""},
		{"critical SAN that also holds a DNS name", func() []byte {
			return intermediate.issue(t, ekTemplate(directoryNameSAN(t, true, dns)), ek.key)
		}, "general name of tag [2]"},
		{"server-auth usage instead of the EK usage", func() []byte {
			return intermediate.issue(t, withEKU(ekTemplate(), x509.ExtKeyUsageServerAuth), ek.key)
		}, "tcg-kp-EKCertificate"},
		{"another unhandled critical extension", func() []byte {
			ext := pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}
			return intermediate.issue(t, ekTemplate(ext), ek.key)
		}, "unhandled critical extension"},
		{"expired", func() []byte {
			tmpl := ekTemplate()
			tmpl.NotAfter = certNow.Add(-time.Second)
			return intermediate.issue(t, tmpl, ek.key)
		}, "expired"},
		{"for another key", func() []byte {
			return intermediate.issue(t, ekTemplate(), &keys[1].PublicKey)
		}, "different key"},
		{"from an unknown CA", func() []byte {
			return stranger.issue(t, ekTemplate(directoryNameSAN(t, true)), ek.key)
		}, "not issued by a CA in ek_ca_files"},
		{"not a certificate", func() []byte { return []byte{0x30, 0x03, 0x02, 0x01, 0x01} }, "parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := trust.verifyCert(tt.der(), ek, certNow)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("verifyCert: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("verifyCert err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestTrust_AllowListDecidesWithoutOrDespiteCertificate(t *testing.T) {
	keys := testRSAKeys(t)
	hash, err := keyHash(&keys[0].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ek := &ekKey{key: &keys[0].PublicKey, hash: hash}
	stranger := newIssuer(t, "stranger", nil)
	foreignCert := stranger.issue(t, ekTemplate(), ek.key)
	tests := []struct {
		name    string
		trust   ekTrust
		cert    []byte
		wantErr string
	}{
		{"listed, no certificate", newEKTrust(nil, []string{hash}), nil, ""},
		{"listed, untrusted certificate", newEKTrust([]*x509.Certificate{newIssuer(t, "ca", nil).cert}, []string{hash}), foreignCert, ""},
		{"not listed, no CAs", newEKTrust(nil, []string{strings.Repeat("0", 64)}), nil, "not in ek_hash_allow_list"},
		{"not listed, no certificate", newEKTrust([]*x509.Certificate{stranger.cert}, nil), nil, "no EK certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.trust.trust(ek, tt.cert, certNow)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("trust: %v", err)
			case tt.wantErr == "" && id.cert != nil:
				t.Errorf("an allow-listed EK kept a certificate that did not verify")
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("trust err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
