package tpm

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"
)

var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// oidEKCertificate is tcg-kp-EKCertificate, the extended key usage of
	// an EK certificate (TCG EK Credential Profile).
	oidEKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// ekTrust decides which EKs are trusted: those whose certificate chains to
// a configured manufacturer CA, and those whose public-key hash is listed.
type ekTrust struct {
	roots         *x509.CertPool
	intermediates *x509.CertPool
	hasCAs        bool
	allow         map[string]bool
}

func newEKTrust(cas []*x509.Certificate, allow []string) ekTrust {
	t := ekTrust{roots: x509.NewCertPool(), intermediates: x509.NewCertPool(), allow: make(map[string]bool)}
	for _, c := range cas {
		// Manufacturers publish roots and intermediates; a self-signed
		// certificate anchors a chain, any other may only link one.
		if isSelfSigned(c) {
			t.roots.AddCert(c)
		} else {
			t.intermediates.AddCert(c)
		}
		t.hasCAs = true
	}
	for _, h := range allow {
		t.allow[h] = true
	}
	return t
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}

// ekIdentity is what a trusted EK tells about the node.
type ekIdentity struct {
	ek *ekKey
	// cert is the verified EK certificate; nil when the EK was trusted by
	// the allow-list without one.
	cert *x509.Certificate
}

// trust checks the EK is trusted at now: by the allow-list, or by its
// certificate (DER, possibly empty) chaining to a configured CA.
func (t ekTrust) trust(ek *ekKey, certDER []byte, now time.Time) (ekIdentity, error) {
	id := ekIdentity{ek: ek}
	var certErr error
	if len(certDER) > 0 {
		id.cert, certErr = t.verifyCert(certDER, ek, now)
		if certErr == nil {
			return id, nil
		}
		id.cert = nil
	}
	if t.allow[ek.hash] {
		return id, nil
	}
	switch {
	case certErr != nil:
		return ekIdentity{}, fmt.Errorf("EK certificate: %w", certErr)
	case t.hasCAs:
		return ekIdentity{}, errors.New("no EK certificate, and the EK's hash is not in ek_hash_allow_list")
	default:
		return ekIdentity{}, errors.New("the EK's hash is not in ek_hash_allow_list")
	}
}

// verifyCert checks der is a certificate for ek issued through a
// configured CA and valid at now.
//
// EK certificates carry two things Go's verifier does not accept as they
// are, and both are handled here deliberately rather than by disabling
// checks: the subject alternative name holds only a directory name (TPM
// manufacturer, model and version) and is critical, which Go reports as
// an unhandled critical extension; and the extended key usage is
// tcg-kp-EKCertificate, which no TLS usage matches. The SAN is accepted
// only when it holds directory names and nothing else; the EKU, when
// present, must include tcg-kp-EKCertificate; every other critical
// extension Go does not handle still fails verification.
func (t ekTrust) verifyCert(der []byte, ek *ekKey, now time.Time) (*x509.Certificate, error) {
	if !t.hasCAs {
		return nil, errors.New("no ek_ca_files are configured")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if !ek.key.Equal(cert.PublicKey) {
		return nil, errors.New("certifies a different key than the EK presented")
	}
	if err := acceptDirectoryNameSAN(cert); err != nil {
		return nil, err
	}
	if err := checkEKUsage(cert); err != nil {
		return nil, err
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:         t.roots,
		Intermediates: t.intermediates,
		CurrentTime:   now,
		// The leaf's usage was checked above; intermediates of EK CAs
		// carry no TLS usages either.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("not issued by a CA in ek_ca_files: %w", err)
	}
	return cert, nil
}

// acceptDirectoryNameSAN checks the certificate's SAN, if it has one,
// holds directory names and nothing else (an EK certificate names a TPM,
// never a host), and then takes it off the unhandled critical extensions.
func acceptDirectoryNameSAN(cert *x509.Certificate) error {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		if err := onlyDirectoryNames(ext.Value); err != nil {
			return fmt.Errorf("subject alternative name: %w", err)
		}
	}
	if i := slices.IndexFunc(cert.UnhandledCriticalExtensions, oidSubjectAltName.Equal); i >= 0 {
		cert.UnhandledCriticalExtensions = slices.Delete(slices.Clone(cert.UnhandledCriticalExtensions), i, i+1)
	}
	return nil
}

// onlyDirectoryNames checks a GeneralNames value holds directory names
// ([4], constructed) and nothing else.
func onlyDirectoryNames(der []byte) error {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil || len(rest) > 0 || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return errors.New("not a GeneralNames sequence")
	}
	names := seq.Bytes
	if len(names) == 0 {
		return errors.New("empty")
	}
	for len(names) > 0 {
		var name asn1.RawValue
		names, err = asn1.Unmarshal(names, &name)
		if err != nil {
			return fmt.Errorf("malformed general name: %w", err)
		}
		if name.Class != asn1.ClassContextSpecific || name.Tag != 4 || !name.IsCompound {
			return fmt.Errorf("holds a general name of tag [%d]; an EK certificate's holds only directory names", name.Tag)
		}
	}
	return nil
}

// checkEKUsage requires tcg-kp-EKCertificate when the certificate limits
// its usage at all.
func checkEKUsage(cert *x509.Certificate) error {
	if len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0 {
		return nil
	}
	if slices.ContainsFunc(cert.UnknownExtKeyUsage, oidEKCertificate.Equal) {
		return nil
	}
	return errors.New("extended key usage does not include tcg-kp-EKCertificate (2.23.133.8.1)")
}
