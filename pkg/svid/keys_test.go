package svid

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustKey(t testing.TB, kt KeyType) crypto.Signer {
	t.Helper()
	key, err := GenerateKey(kt)
	if err != nil {
		t.Fatalf("GenerateKey(%s): %v", kt, err)
	}
	return key
}

func TestParseKeyType(t *testing.T) {
	tests := []struct {
		in      string
		want    KeyType
		wantErr string
	}{
		{in: "ec-p256", want: KeyTypeECP256},
		{in: "ec-p384", want: KeyTypeECP384},
		{in: "rsa-2048", want: KeyTypeRSA2048},
		{in: "", wantErr: `key type "": must be one of ec-p256, ec-p384, rsa-2048`},
		{in: "EC-P256", wantErr: `key type "EC-P256": must be one of ec-p256, ec-p384, rsa-2048`},
		{in: "rsa-1024", wantErr: `key type "rsa-1024": must be one of ec-p256, ec-p384, rsa-2048`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseKeyType(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("ParseKeyType(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseKeyType(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestGenerateKey_MakesTheRequestedKind(t *testing.T) {
	tests := []struct {
		kt   KeyType
		want string // curve name or RSA bit size
	}{
		{KeyTypeECP256, "P-256"},
		{KeyTypeECP384, "P-384"},
		{KeyTypeRSA2048, "rsa-2048"},
	}
	for _, tt := range tests {
		t.Run(string(tt.kt), func(t *testing.T) {
			key := mustKey(t, tt.kt)
			var got string
			switch k := key.(type) {
			case *ecdsa.PrivateKey:
				got = k.Curve.Params().Name
			case *rsa.PrivateKey:
				got = "rsa-" + strconv.Itoa(k.N.BitLen())
			}
			if got != tt.want {
				t.Fatalf("key kind = %q, want %q", got, tt.want)
			}
			if err := CheckPublicKey(key.Public()); err != nil {
				t.Fatalf("generated key fails the key policy: %v", err)
			}
		})
	}
	if _, err := GenerateKey("dsa"); err == nil || !strings.Contains(err.Error(), "must be one of") {
		t.Fatalf("GenerateKey(dsa) error = %v, want the allowed list", err)
	}
}

func TestCheckPublicKey(t *testing.T) {
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name    string
		pub     crypto.PublicKey
		wantErr string
	}{
		{"ECDSA P-256 is allowed", mustKey(t, KeyTypeECP256).Public(), ""},
		{"ECDSA P-384 is allowed", mustKey(t, KeyTypeECP384).Public(), ""},
		{"RSA 2048 is allowed", mustKey(t, KeyTypeRSA2048).Public(), ""},
		{"ECDSA P-521 is refused", p521.Public(), "ECDSA curve P-521 is not allowed"},
		{"RSA 1024 is refused", rsa1024.Public(), "RSA key of 1024 bits is too small (minimum 2048)"},
		{"Ed25519 is refused", edPub, "public key type ed25519.PublicKey is not allowed"},
		{"nil is refused", nil, "public key is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPublicKey(tt.pub)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckPublicKey: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckPublicKey error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestPrivateKeyPEM_RoundTripsEveryKeyType(t *testing.T) {
	for _, kt := range KeyTypes() {
		t.Run(string(kt), func(t *testing.T) {
			key := mustKey(t, kt)
			data, err := EncodePrivateKeyPEM(key)
			if err != nil {
				t.Fatal(err)
			}
			if block, _ := pem.Decode(data); block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("encoded key is not a PKCS#8 PEM block: %q", data)
			}
			got, err := ParsePrivateKeyPEM(data)
			if err != nil {
				t.Fatal(err)
			}
			if !KeyMatches(got, key.Public()) {
				t.Fatal("parsed key differs from the encoded one")
			}
		})
	}
}

func TestParsePrivateKeyPEM_LegacyFormatsAndErrors(t *testing.T) {
	ec := mustKey(t, KeyTypeECP256).(*ecdsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	rk := mustKey(t, KeyTypeRSA2048).(*rsa.PrivateKey)
	certBlock := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})
	tests := []struct {
		name    string
		data    []byte
		want    crypto.PublicKey
		wantErr string
	}{
		{"SEC 1 EC key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ec.Public(), ""},
		{"PKCS#1 RSA key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), rk.Public(), ""},
		{"key after a certificate", append(certBlock, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), ec.Public(), ""},
		{"encrypted key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), nil, "encrypted private keys are not supported"},
		{"no PEM", []byte("not pem"), nil, "no PEM private key block found"},
		{"corrupt DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), nil, "parse PRIVATE KEY block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrivateKeyPEM(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !KeyMatches(got, tt.want) {
				t.Fatal("parsed key does not match")
			}
		})
	}
}

func TestKeyMatches_DistinguishesKeys(t *testing.T) {
	a, b := mustKey(t, KeyTypeECP256), mustKey(t, KeyTypeECP256)
	if diff := cmp.Diff([]bool{true, false}, []bool{KeyMatches(a, a.Public()), KeyMatches(a, b.Public())}); diff != "" {
		t.Fatalf("KeyMatches (-want +got):\n%s", diff)
	}
}

func TestParseCertificatesPEM_AllCertificatesInOrderAndOnlyCertificates(t *testing.T) {
	a, b := newTestCA(t, KeyTypeECP256), newTestCA(t, KeyTypeECP256)
	pemOf := func(c *x509.Certificate) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	got, err := ParseCertificatesPEM([]byte("comment before\n" + pemOf(a.cert) + pemOf(b.cert)))
	if err != nil || len(got) != 2 || !got[0].Equal(a.cert) || !got[1].Equal(b.cert) {
		t.Fatalf("ParseCertificatesPEM = %d certificates, %v; want both in order", len(got), err)
	}
	keyPEM, err := EncodePrivateKeyPEM(mustKey(t, KeyTypeECP256))
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ data, want string }{
		"empty":            {"", "no PEM certificate found"},
		"a key after a CA": {pemOf(a.cert) + string(keyPEM), `PEM block 2 is "PRIVATE KEY", want CERTIFICATE`},
		"a broken cert":    {string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})), "certificate 1:"},
		"text without PEM": {"hello", "no PEM certificate found"},
	} {
		if _, err := ParseCertificatesPEM([]byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
	// A combined certificate and key file, as upstream CAs are often kept.
	got, err = CertificatesInPEM([]byte(string(keyPEM) + pemOf(a.cert)))
	if err != nil || len(got) != 1 || !got[0].Equal(a.cert) {
		t.Errorf("CertificatesInPEM of a key then a certificate = %d, %v; want the certificate", len(got), err)
	}
	if _, err := CertificatesInPEM(keyPEM); err == nil || !strings.Contains(err.Error(), "no PEM certificate found") {
		t.Errorf("CertificatesInPEM of a key alone = %v, want no certificate found", err)
	}
}
