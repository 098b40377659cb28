package keys

import (
	"crypto/x509"
	"strings"
	"testing"
)

func TestGenerate_EveryTypeMakesAKeyWhoseCSRAndPKCS8RoundTrip(t *testing.T) {
	for _, typ := range Types() {
		t.Run(typ, func(t *testing.T) {
			key, err := Generate(typ)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			der, err := CSR(key)
			if err != nil {
				t.Fatalf("CSR: %v", err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatalf("ParseCertificateRequest: %v", err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Errorf("CSR signature: %v", err)
			}
			if !Matches(key, csr.PublicKey) {
				t.Error("CSR public key does not match the key")
			}
			p8, err := MarshalPKCS8(key)
			if err != nil {
				t.Fatalf("MarshalPKCS8: %v", err)
			}
			back, err := ParsePKCS8(p8)
			if err != nil {
				t.Fatalf("ParsePKCS8: %v", err)
			}
			if !Matches(back, key.Public()) {
				t.Error("decoded key differs from the original")
			}
		})
	}
}

func TestCheck_RejectsUnknownTypeListingTheChoices(t *testing.T) {
	for _, typ := range []string{"", "ec-p521", "EC-P256"} {
		err := Check(typ)
		if err == nil || !strings.Contains(err.Error(), "ec-p256, ec-p384, rsa-2048") {
			t.Errorf("Check(%q) = %v, want an error listing the choices", typ, err)
		}
		if _, err := Generate(typ); err == nil {
			t.Errorf("Generate(%q) succeeded", typ)
		}
	}
}

func TestParsePKCS8_RejectsGarbage(t *testing.T) {
	if _, err := ParsePKCS8([]byte("not a key")); err == nil {
		t.Error("ParsePKCS8 accepted garbage")
	}
}
