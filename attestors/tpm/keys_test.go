package tpm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// modifiedAK re-encodes a software AK's public area after mod changes it.
func modifiedAK(t *testing.T, mod func(*tpm2.TPMTPublic)) []byte {
	t.Helper()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](softwareAK(t))
	if err != nil {
		t.Fatal(err)
	}
	mod(pub)
	return tpm2.Marshal(pub)
}

func TestCheckAK_RefusesKeysAQuoteCannotRestOn(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*tpm2.TPMTPublic)
		want string
	}{
		{"not restricted", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false }, "not restricted"},
		{"not a signing key", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = false }, "not a signing key"},
		{"also decrypts", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true }, "also a decryption key"},
		{"may leave the TPM", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false }, "not fixedTPM and fixedParent"},
		{"may be re-parented", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedParent = false }, "not fixedTPM and fixedParent"},
		{"imported private key", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = false }, "not sensitiveDataOrigin"},
		{"SHA-1 name", func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 }, "name algorithm"},
		{"P-384", func(p *tpm2.TPMTPublic) {
			parms, _ := p.Parameters.ECCDetail()
			parms.CurveID = tpm2.TPMECCNistP384
		}, "want P-256 with ECDSA"},
		{"SHA-1 signatures", func(p *tpm2.TPMTPublic) {
			parms, _ := p.Parameters.ECCDetail()
			parms.Scheme.Details = tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA1})
		}, "does not sign with SHA-256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkAK(modifiedAK(t, tt.mod))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("checkAK err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCheckAK_NameIsTheTPMName(t *testing.T) {
	raw := softwareAK(t)
	ak, err := checkAK(raw)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](raw)
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ak.name, name.Buffer) {
		t.Errorf("name = %x, go-tpm computes %x", ak.name, name.Buffer)
	}
	sum := sha256.Sum256(raw)
	if !bytes.Equal(ak.name[2:], sum[:]) {
		t.Error("the name is not the SHA-256 of the public area as sent")
	}
}

func TestCheckAK_RefusesNonCanonicalEncoding(t *testing.T) {
	if _, err := checkAK(append(softwareAK(t), 0)); err == nil || !strings.Contains(err.Error(), "trailing bytes") {
		t.Errorf("checkAK(trailing byte) err = %v, want it refused", err)
	}
}

// ekPublic is an EK public area of the standard template holding a
// software RSA key.
func ekPublic(t *testing.T, mod func(*tpm2.TPMTPublic)) []byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub := tpm2.RSAEKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: key.N.Bytes()})
	if mod != nil {
		mod(&pub)
	}
	return tpm2.Marshal(pub)
}

func TestCheckEK_RequiresTheStandardTemplate(t *testing.T) {
	if _, err := checkEK(ekPublic(t, nil)); err != nil {
		t.Fatalf("checkEK(standard EK): %v", err)
	}
	tests := []struct {
		name string
		mod  func(*tpm2.TPMTPublic)
		want string
	}{
		{"user auth instead of the policy", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.UserWithAuth = true }, "attributes"},
		{"another policy", func(p *tpm2.TPMTPublic) { p.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 32)} }, "auth policy"},
		{"signing key", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = true }, "attributes"},
		{"short modulus", func(p *tpm2.TPMTPublic) {
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: bytes.Repeat([]byte{0xff}, 128)})
		}, "RSA modulus of 1024 bits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkEK(ekPublic(t, tt.mod))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("checkEK err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
