package svid

import (
	"crypto/x509"
	"errors"
	"fmt"
)

// MaxCSRSize bounds the DER size of a CSR CheckCSR accepts. A CSR for the
// largest allowed key is well under 2 KiB; the limit keeps parsing cheap
// for input that arrives from the network.
const MaxCSRSize = 16 << 10

// CheckCSR parses a DER-encoded PKCS#10 certificate request, verifies its
// self-signature (proof that the requester holds the private key) and
// applies the key policy of CheckPublicKey. Only the public key matters to
// nhid: callers ignore the CSR's subject, SANs and extensions and take the
// identity from the registration entry.
func CheckCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, errors.New("csr: empty")
	}
	if len(der) > MaxCSRSize {
		return nil, fmt.Errorf("csr: %d bytes, at most %d allowed", len(der), MaxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("csr: not a DER PKCS#10 request: %w", err)
	}
	if err := CheckPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("csr public key: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr signature: %w", err)
	}
	return csr, nil
}
