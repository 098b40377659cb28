package svid

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
)

func mustCSR(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func TestCheckCSR(t *testing.T) {
	ecKey := mustKey(t, KeyTypeECP256)
	rsaKey := mustKey(t, KeyTypeRSA2048)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tampered := mustCSR(t, ecKey)
	tampered[len(tampered)-1] ^= 0xff // last byte of the signature
	tests := []struct {
		name    string
		der     []byte
		wantKey crypto.PublicKey
		wantErr string
	}{
		{"good EC P-256", mustCSR(t, ecKey), ecKey.Public(), ""},
		{"good EC P-384", mustCSR(t, mustKey(t, KeyTypeECP384)), nil, ""},
		{"good RSA 2048", mustCSR(t, rsaKey), rsaKey.Public(), ""},
		{"RSA 1024 is rejected", mustCSR(t, rsa1024), nil, "csr public key: RSA key of 1024 bits is too small"},
		{"tampered signature is rejected", tampered, nil, "csr signature:"},
		{"garbage is rejected", []byte("definitely not DER"), nil, "csr: not a DER PKCS#10 request"},
		{"empty is rejected", nil, nil, "csr: empty"},
		{"oversized is rejected", make([]byte, MaxCSRSize+1), nil, "at most 16384 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := CheckCSR(tt.der)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CheckCSR error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("CheckCSR: %v", err)
			}
			if tt.wantKey != nil && !tt.wantKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
				t.Fatal("CSR public key differs from the requester's key")
			}
		})
	}
}
