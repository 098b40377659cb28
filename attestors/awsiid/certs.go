package awsiid

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// maxCertificates bounds the certificates a verifier tries per
// attestation: AWS publishes one "RSA" certificate per region, and most
// regions share one.
const maxCertificates = 128

// ParseCertificates reads AWS's public "RSA" certificates for instance
// identity documents from PEM data: one or several CERTIFICATE blocks.
// Text between the blocks (a region's name, say) is ignored. Certificates
// whose key is not RSA are refused: those are the DSA certificates, which
// verify the "pkcs7" signature this attestor does not use.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n := len(certs) + 1
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, want CERTIFICATE", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n, err)
		}
		if err := checkKey(c); err != nil {
			return nil, fmt.Errorf("certificate %d (%s): %w", n, c.Subject, err)
		}
		certs = append(certs, c)
	}
	switch {
	case len(certs) == 0:
		return nil, errors.New("no PEM CERTIFICATE block found")
	case len(certs) > maxCertificates:
		return nil, fmt.Errorf("%d certificates, more than %d", len(certs), maxCertificates)
	}
	return certs, nil
}

// checkKey accepts the RSA keys Go verifies signatures with (1024 bits
// and more).
func checkKey(c *x509.Certificate) error {
	k, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("key is %T, want RSA: use the region's \"RSA\" certificate (a DSA one verifies the pkcs7 signature, which this attestor does not use)", c.PublicKey)
	}
	if k.N.BitLen() < 1024 {
		return fmt.Errorf("RSA key of %d bits is too short", k.N.BitLen())
	}
	return nil
}
