// Package svid builds the certificates and tokens nhid issues: X.509-SVID
// and CA certificate templates that follow the SPIFFE X509-SVID standard,
// JWT-SVID signing (go-jose), and the key policy shared by the server and the
// agent: which key types may be generated, which public keys are accepted in
// CSRs and SVIDs, and how private keys are stored on disk.
//
// The package only builds and checks; it keeps no state. pkg/ca owns the
// keys and decides what is signed.
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
	"errors"
	"fmt"
)

// KeyType names a kind of key nhid generates. The string form is what
// configuration files carry.
type KeyType string

// The key types nhid generates.
const (
	// KeyTypeECP256 is ECDSA on NIST P-256; JWTs signed with it use ES256.
	KeyTypeECP256 KeyType = "ec-p256"
	// KeyTypeECP384 is ECDSA on NIST P-384; JWTs signed with it use ES384.
	KeyTypeECP384 KeyType = "ec-p384"
	// KeyTypeRSA2048 is 2048-bit RSA; JWTs signed with it use RS256.
	KeyTypeRSA2048 KeyType = "rsa-2048"
)

// DefaultKeyType is used where configuration leaves the key type empty.
const DefaultKeyType = KeyTypeECP256

var keyTypes = [...]KeyType{KeyTypeECP256, KeyTypeECP384, KeyTypeRSA2048}

// KeyTypes lists every KeyType, in the order error messages show them.
func KeyTypes() []KeyType { return append([]KeyType(nil), keyTypes[:]...) }

const (
	minRSABits = 2048
	// maxRSABits bounds the cost of verifying a signature made with a key
	// a caller chose; crypto/x509 applies the same limit when parsing.
	maxRSABits = 8192
)

// ParseKeyType parses a configured key type. The error lists the allowed
// values, so a config error can be fixed without reading the docs.
func ParseKeyType(s string) (KeyType, error) {
	for _, kt := range keyTypes {
		if string(kt) == s {
			return kt, nil
		}
	}
	return "", fmt.Errorf("key type %q: must be one of %s", s, allowedKeyTypes())
}

func allowedKeyTypes() string {
	s := ""
	for i, kt := range keyTypes {
		if i > 0 {
			s += ", "
		}
		s += string(kt)
	}
	return s
}

// GenerateKey creates a new private key of type kt.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case KeyTypeECP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyTypeECP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyTypeRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("key type %q: must be one of %s", kt, allowedKeyTypes())
	}
}

// CheckPublicKey enforces the key policy for keys nhid certifies: ECDSA on
// P-256 or P-384, or RSA with 2048 to 8192 bits. Other curves, Ed25519 and
// short RSA keys are refused because not every SPIFFE verifier (and not
// every JWT-SVID algorithm list) supports them.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return errors.New("ECDSA public key is empty")
		}
		name := k.Curve.Params().Name
		if name != "P-256" && name != "P-384" {
			return fmt.Errorf("ECDSA curve %s is not allowed (allowed: P-256, P-384)", name)
		}
		return nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return errors.New("RSA public key is empty")
		}
		bits := k.N.BitLen()
		if bits < minRSABits {
			return fmt.Errorf("RSA key of %d bits is too small (minimum %d)", bits, minRSABits)
		}
		if bits > maxRSABits {
			return fmt.Errorf("RSA key of %d bits is too large (maximum %d)", bits, maxRSABits)
		}
		return nil
	case nil:
		return errors.New("public key is missing")
	default:
		return fmt.Errorf("public key type %T is not allowed (allowed: ECDSA P-256/P-384, RSA >= %d bits)", pub, minRSABits)
	}
}

// EncodePrivateKeyPEM encodes key as an unencrypted PKCS#8 "PRIVATE KEY"
// PEM block. The result is secret: write it only to files mode 0600.
func EncodePrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertificatesPEM reads every certificate of PEM data, in order: a
// CA file or a trust bundle. Blocks of any other type are refused, so a
// key or a misnamed file is reported rather than skipped, and an empty
// result is an error. Errors number certificates from 1.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	return parseCertificatesPEM(data, false)
}

// CertificatesInPEM is ParseCertificatesPEM for files that may hold other
// blocks too, which it skips: an upstream CA's certificate file that is
// also its key file, as operators often keep them.
func CertificatesInPEM(data []byte) ([]*x509.Certificate, error) {
	return parseCertificatesPEM(data, true)
}

func parseCertificatesPEM(data []byte, skipOthers bool) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest, n := data, 0; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n++
		if block.Type != "CERTIFICATE" {
			if skipOthers {
				continue
			}
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// ParsePrivateKeyPEM reads the first private key in PEM data: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"),
// so keys made by openssl's older defaults load too. Encrypted keys are
// refused. The caller applies its own key policy to the result.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key block found")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s block: %w", block.Type, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		default:
			return nil, fmt.Errorf("private key type %T is not supported", key)
		}
	}
}

// KeyMatches reports whether pub is the public half of key.
func KeyMatches(key crypto.Signer, pub crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	kp, ok := key.Public().(equaler)
	return ok && kp.Equal(pub)
}

func isRSA(pub crypto.PublicKey) bool {
	_, ok := pub.(*rsa.PublicKey)
	return ok
}
