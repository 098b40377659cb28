package svid

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// serialBits is the serial number size. RFC 5280 allows up to 20 octets;
// 128 random bits make collisions and guessing irrelevant while leaving room
// for the sign bit.
const serialBits = 128

var serialLimit = new(big.Int).Lsh(big.NewInt(1), serialBits)

// MaxSPIFFEIDLen is the longest SPIFFE ID nhid puts in an SVID. SPIFFE-ID
// §2.3: implementations must support IDs of up to 2048 bytes and should not
// generate longer ones, which other implementations may refuse.
const MaxSPIFFEIDLen = 2048

// CheckLeafID checks that id may name an SVID's subject: set, with a
// non-root path (X509-SVID §3.1: a leaf's SPIFFE ID names a workload, not
// the trust domain; go-spiffe refuses such a leaf), and at most
// MaxSPIFFEIDLen bytes.
func CheckLeafID(id spiffeid.ID) error {
	switch {
	case id.IsZero():
		return errors.New("id: SPIFFE ID is empty")
	case id.Path() == "":
		return fmt.Errorf("id: %s has no path; an SVID names a workload, not the trust domain", id)
	case len(id.String()) > MaxSPIFFEIDLen:
		return fmt.Errorf("id: SPIFFE ID is %d bytes, at most %d allowed", len(id.String()), MaxSPIFFEIDLen)
	}
	return nil
}

// NewSerial returns a random, strictly positive 128-bit serial number.
func NewSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// LeafTemplate returns the template of an X.509-SVID for id and pub, to be
// signed by x509.CreateCertificate with the CA as parent.
//
// It follows the SPIFFE X509-SVID standard: exactly one URI SAN (the SPIFFE
// ID, which must pass CheckLeafID); basicConstraints cA=false; a critical
// keyUsage with digitalSignature (and keyEncipherment for RSA keys, which
// TLS 1.2 RSA key exchange needs) and never keyCertSign or cRLSign;
// extKeyUsage serverAuth and clientAuth.
//
// The Subject is deliberately empty. The identity is the URI SAN, and
// putting it in a Subject attribute would break on IDs longer than the 64
// characters X.520 allows for a common name. With an empty Subject, RFC
// 5280 §4.2.1.6 and the SPIFFE standard require the SAN extension to be
// critical, which crypto/x509 does by itself when Subject is empty.
//
// dnsNames become DNS SANs; each must be a valid host name, optionally with
// a leading "*." wildcard label.
func LeafTemplate(id spiffeid.ID, pub crypto.PublicKey, serial *big.Int, notBefore, notAfter time.Time, dnsNames []string) (*x509.Certificate, error) {
	if err := CheckLeafID(id); err != nil {
		return nil, err
	}
	if err := checkCommon(pub, serial, notBefore, notAfter); err != nil {
		return nil, err
	}
	if err := checkDNSNames(dnsNames); err != nil {
		return nil, err
	}
	ski, err := SubjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	usage := x509.KeyUsageDigitalSignature
	if isRSA(pub) {
		usage |= x509.KeyUsageKeyEncipherment
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              append([]string(nil), dnsNames...),
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		SubjectKeyId:          ski,
		PublicKey:             pub,
	}, nil
}

// CATemplate returns the template of a signing CA certificate for trust
// domain td: cA=true, keyUsage keyCertSign and cRLSign, and one URI SAN,
// the trust domain's SPIFFE ID (no path), as the standard allows for
// signing certificates.
//
// MaxPathLen is 0 in both uses nhid has: a self-signed root and an
// intermediate under an upstream CA each sign leaf SVIDs only. Path length
// counts the CA certificates below the one carrying the constraint, so 0
// forbids anything the CA signs from acting as a CA, even if a signing bug
// set cA=true on it. The upstream CA's own constraint (it must allow at
// least one CA below it) is the upstream's business and is checked by
// whoever loads it.
//
// subject must not be empty: a CA's subject is the issuer name of every
// certificate it signs, and RFC 5280 forbids an empty issuer.
func CATemplate(td spiffeid.TrustDomain, subject pkix.Name, pub crypto.PublicKey, serial *big.Int, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if td.IsZero() {
		return nil, errors.New("trust domain: empty")
	}
	if len(subject.ToRDNSequence()) == 0 {
		return nil, errors.New("subject: a CA certificate needs a non-empty subject")
	}
	if err := checkCommon(pub, serial, notBefore, notAfter); err != nil {
		return nil, err
	}
	ski, err := SubjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{td.ID().URL()},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski,
		PublicKey:             pub,
	}, nil
}

func checkCommon(pub crypto.PublicKey, serial *big.Int, notBefore, notAfter time.Time) error {
	if err := CheckPublicKey(pub); err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	if serial == nil || serial.Sign() <= 0 {
		return errors.New("serial: must be a positive number")
	}
	if serial.BitLen() > 159 {
		return errors.New("serial: longer than the 20 octets RFC 5280 allows")
	}
	if !notAfter.After(notBefore) {
		return fmt.Errorf("validity: notAfter %s is not after notBefore %s", notAfter.UTC().Format(time.RFC3339), notBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// SubjectKeyID derives a subject key identifier from pub by RFC 7093
// method 1: the leftmost 160 bits of the SHA-256 hash of the
// subjectPublicKey bit string. Leaf and CA certificates use the same method
// so that a CA's key id and its leaves' authority key ids are comparable.
func SubjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	var bits []byte
	// The subjectPublicKey bit string is the uncompressed point for ECDSA
	// and the PKCS#1 encoding for RSA; taking it directly keeps ASN.1
	// reflection off the signing path.
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		b, err := k.Bytes()
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		bits = b
	case *rsa.PublicKey:
		bits = x509.MarshalPKCS1PublicKey(k)
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		var spki struct {
			Algorithm        pkix.AlgorithmIdentifier
			SubjectPublicKey asn1.BitString
		}
		if _, err := asn1.Unmarshal(der, &spki); err != nil {
			return nil, fmt.Errorf("public key: decode SubjectPublicKeyInfo: %w", err)
		}
		bits = spki.SubjectPublicKey.Bytes
	}
	sum := sha256.Sum256(bits)
	return sum[:20], nil
}
