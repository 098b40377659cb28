// Package awsiidtest stands in for AWS in tests of the aws_iid attestor: a
// region's signing key and public "RSA" certificate, instance identity
// documents in the form IMDS serves them, and an IMDSv2 server speaking
// the real wire protocol (session token PUT, token-checked GETs).
package awsiidtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Signer is one region's instance identity signing key with its
// self-signed certificate, as AWS publishes the "RSA" certificate.
type Signer struct {
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
	// PEM is the certificate in PEM, as an operator's certificates_file
	// holds it.
	PEM []byte
}

// NewSigner makes an RSA-2048 key and its certificate.
func NewSigner(t testing.TB) *Signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate the test AWS key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	name := pkix.Name{Country: []string{"US"}, Province: []string{"Washington State"}, Locality: []string{"Seattle"},
		Organization: []string{"Amazon Web Services LLC (test)"}}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: name, Issuer: name,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(100 * 365 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("create the test AWS certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{Key: key, Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Sign returns the signature of doc as IMDS serves it at
// /latest/dynamic/instance-identity/signature: RSA PKCS #1 v1.5 over the
// SHA-256 of the document, base64 in lines of 64 characters.
func (s *Signer) Sign(doc []byte) string {
	digest := sha256.Sum256(doc)
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.Key, crypto.SHA256, digest[:])
	if err != nil {
		panic(fmt.Sprintf("sign with the test AWS key: %v", err))
	}
	b64 := base64.StdEncoding.EncodeToString(sig)
	var lines []string
	for len(b64) > 64 {
		lines = append(lines, b64[:64])
		b64 = b64[64:]
	}
	return strings.Join(append(lines, b64), "\n")
}

// WriteCertFile writes PEM certificates (of one or several signers) to a
// new file and returns its path.
func WriteCertFile(t testing.TB, signers ...*Signer) string {
	t.Helper()
	var data []byte
	for _, s := range signers {
		data = append(data, s.PEM...)
	}
	path := filepath.Join(t.TempDir(), "aws-iid-certs.pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Document is an instance identity document's fields.
type Document struct {
	AccountID        string
	Architecture     string
	AvailabilityZone string
	ImageID          string
	InstanceID       string
	InstanceType     string
	PendingTime      time.Time
	PrivateIP        string
	Region           string
}

// NewDocument returns a plausible document of an instance started an hour
// ago in us-east-1.
func NewDocument() Document {
	return Document{
		AccountID:        "123456789012",
		Architecture:     "x86_64",
		AvailabilityZone: "us-east-1b",
		ImageID:          "ami-0abcdef1234567890",
		InstanceID:       "i-0123456789abcdef0",
		InstanceType:     "m5.large",
		PendingTime:      time.Now().Add(-time.Hour).UTC().Truncate(time.Second),
		PrivateIP:        "10.0.1.23",
		Region:           "us-east-1",
	}
}

// Render writes the document as IMDS serves it: indented JSON with
// " : " between keys and values, keys in AWS's order, and the fields
// nhid does not read.
func (d Document) Render() []byte {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	fields := [][2]string{
		{"accountId", q(d.AccountID)},
		{"architecture", q(d.Architecture)},
		{"availabilityZone", q(d.AvailabilityZone)},
		{"billingProducts", "null"},
		{"devpayProductCodes", "null"},
		{"marketplaceProductCodes", "null"},
		{"imageId", q(d.ImageID)},
		{"instanceId", q(d.InstanceID)},
		{"instanceType", q(d.InstanceType)},
		{"kernelId", "null"},
		{"pendingTime", q(d.PendingTime.UTC().Format(time.RFC3339))},
		{"privateIp", q(d.PrivateIP)},
		{"ramdiskId", "null"},
		{"region", q(d.Region)},
		{"version", q("2017-09-30")},
	}
	var b strings.Builder
	b.WriteString("{\n")
	for i, f := range fields {
		fmt.Fprintf(&b, "  %q : %s", f[0], f[1])
		if i < len(fields)-1 {
			b.WriteString(",")
		}
		b.WriteString("\n")
	}
	b.WriteString("}")
	return []byte(b.String())
}
