package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/nhid/nhid/pkg/svid"
)

// backdate is how far NotBefore is set in the past, so that a verifier
// whose clock is a little behind still accepts a new certificate.
const backdate = 10 * time.Second

// newX509Slot creates and persists the key of a new X.509 CA and signs its
// certificate: self-signed, or by the upstream CA. The anchors returned are
// what the bundle must hold for the new CA's SVIDs to verify.
func (c *CA) newX509Slot(now time.Time) (slot, []*x509.Certificate, error) {
	var up *upstream
	notAfter := now.Add(c.cfg.TTL)
	if c.cfg.UpstreamCertFile != "" {
		var err error
		if up, err = c.loadUpstream(now); err != nil {
			return slot{}, nil, fmt.Errorf("upstream CA: %w", err)
		}
		if up.notAfter.Before(notAfter) {
			notAfter = up.notAfter
		}
	}
	key, err := svid.GenerateKey(c.cfg.KeyType)
	if err != nil {
		return slot{}, nil, fmt.Errorf("generate CA key: %w", err)
	}
	cert, err := c.signCACert(key, up, now, notAfter)
	if err != nil {
		return slot{}, nil, err
	}
	s := slot{
		id: cert.SerialNumber.Text(16), status: statusNext,
		notBefore: cert.NotBefore, notAfter: cert.NotAfter, publishedAt: now,
		key: key, cert: cert,
	}
	anchors := []*x509.Certificate{cert}
	if up != nil {
		s.chain, anchors = up.intermediates, up.roots
	}
	s.keyFile = "x509-" + s.id + ".key"
	if err := c.files.writeKey(s.keyFile, key); err != nil {
		return slot{}, nil, err
	}
	return s, anchors, nil
}

// loadUpstream reads the configured upstream CA and makes sure it can
// still sign a CA worth having.
func (c *CA) loadUpstream(now time.Time) (*upstream, error) {
	up, err := loadUpstream(c.cfg.UpstreamCertFile, c.cfg.UpstreamKeyFile, now)
	if err != nil {
		return nil, err
	}
	if up.notAfter.Sub(now) < MinTTL {
		return nil, fmt.Errorf("UpstreamCertFile %s: its chain expires at %s, less than %s from now; renew the upstream",
			c.cfg.UpstreamCertFile, up.notAfter.UTC().Format(time.RFC3339), MinTTL)
	}
	return up, nil
}

// signCACert issues the CA certificate for key and checks that it verifies,
// so that a broken upstream is caught here and not by every agent.
func (c *CA) signCACert(key crypto.Signer, up *upstream, now, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := svid.NewSerial()
	if err != nil {
		return nil, err
	}
	subject := c.cfg.Subject
	if subject.SerialNumber == "" {
		// Tells apart the CAs of one server (and of several servers) that
		// share a subject, for people and for name-based chain builders.
		subject.SerialNumber = serial.Text(16)
	}
	tmpl, err := svid.CATemplate(c.td, subject, key.Public(), serial, now.Add(-backdate), notAfter)
	if err != nil {
		return nil, fmt.Errorf("CA certificate template: %w", err)
	}
	parent, signer := tmpl, key
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	if up != nil {
		parent, signer = up.cert, up.key
		for _, r := range up.roots {
			roots.AddCert(r)
		}
		for _, i := range up.intermediates {
			inters.AddCert(i)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	if up == nil {
		roots.AddCert(cert)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inters, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("new CA certificate does not verify: %w", err)
	}
	return cert, nil
}

// newJWTSlot creates and persists a new JWT signing key.
func (c *CA) newJWTSlot(now time.Time) (slot, error) {
	key, err := svid.GenerateKey(c.cfg.JWTKeyType)
	if err != nil {
		return slot{}, fmt.Errorf("generate JWT key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return slot{}, fmt.Errorf("marshal JWT public key: %w", err)
	}
	kid, err := svid.JWTKeyID(key.Public())
	if err != nil {
		return slot{}, err
	}
	signer, err := svid.NewJWTSigner(key, kid)
	if err != nil {
		return slot{}, err
	}
	s := slot{
		id: kid, status: statusNext, notBefore: now, notAfter: now.Add(c.cfg.TTL), publishedAt: now,
		key: key, keyFile: "jwt-" + kid + ".key", pub: key.Public(), pubDER: pubDER, signer: signer,
	}
	if err := c.files.writeKey(s.keyFile, key); err != nil {
		return slot{}, err
	}
	return s, nil
}
