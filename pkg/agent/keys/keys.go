// Package keys owns the private keys nhid-agent generates on the node, for
// its own SVID and for workload SVIDs: the supported key types, generation,
// certificate signing requests and PKCS#8 (de)serialisation. Keys are made
// where they are used and never sent anywhere; only CSRs leave the node.
package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// Key types, as spelled in configuration.
const (
	ECP256  = "ec-p256"
	ECP384  = "ec-p384"
	RSA2048 = "rsa-2048"
)

// Default is the key type used when none is configured.
const Default = ECP256

// Types lists the supported key types.
func Types() []string { return []string{ECP256, ECP384, RSA2048} }

// Check reports whether keyType is supported.
func Check(keyType string) error {
	switch keyType {
	case ECP256, ECP384, RSA2048:
		return nil
	}
	return fmt.Errorf("key type %q: must be one of %s", keyType, strings.Join(Types(), ", "))
}

// Generate makes a new private key of keyType.
func Generate(keyType string) (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch keyType {
	case ECP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECP384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, Check(keyType)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", keyType, err)
	}
	return key, nil
}

// CSR returns a PKCS#10 request (ASN.1 DER) signed by key. It carries no
// subject or names: the server decides those from the entry or the node.
func CSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return der, nil
}

// MarshalPKCS8 encodes key as PKCS#8 DER.
func MarshalPKCS8(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return der, nil
}

// ParsePKCS8 decodes a PKCS#8 DER private key usable for signing.
func ParsePKCS8(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("decode private key: %w", err)
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, errors.New("decode private key: unsupported key type")
}

// Matches reports whether key is the private half of pub.
func Matches(key crypto.Signer, pub crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := key.Public().(equaler)
	return ok && e.Equal(pub)
}
