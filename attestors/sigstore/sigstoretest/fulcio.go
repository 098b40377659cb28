package sigstoretest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ct "github.com/google/certificate-transparency-go"
	cttls "github.com/google/certificate-transparency-go/tls"
	ctx509 "github.com/google/certificate-transparency-go/x509"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// Fulcio's certificate extensions for the OIDC issuer.
var (
	issuerOID       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}
	legacyIssuerOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}
	// sctListOID is RFC 6962's embedded SCT list extension.
	sctListOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11129, 2, 4, 2}
)

// FakeSigstore is a private Sigstore whose every certificate and log
// entry the test shapes: a Fulcio-like CA (root and intermediate), a
// Rekor-like log key and a CT log key. cosign v2 keyless signatures need
// leaves, Rekor bodies and signed entry timestamps made apart, which the
// virtual Sigstore of NewSigstore does not offer.
type FakeSigstore struct {
	// FulcioValidUntil and RekorValidUntil, when set, end the CA's and
	// the Rekor log's validity in the trusted root TrustedRoot returns.
	FulcioValidUntil, RekorValidUntil time.Time

	root, intermediate *x509.Certificate
	intermediateKey    *ecdsa.PrivateKey
	rekorKey, ctKey    *ecdsa.PrivateKey
	start              time.Time
	logIndex           atomic.Int64
}

// NewFakeSigstore creates one, valid from a day ago.
func NewFakeSigstore(t testing.TB) *FakeSigstore {
	t.Helper()
	s := &FakeSigstore{start: time.Now().Add(-24 * time.Hour).Truncate(time.Second)}
	rootKey := newECKey(t)
	s.root = issue(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "fake-sigstore", Organization: []string{"nhid tests"}},
		NotBefore:             s.start,
		NotAfter:              s.start.Add(10 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil, &rootKey.PublicKey, rootKey)
	s.intermediateKey = newECKey(t)
	s.intermediate = issue(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "fake-sigstore-intermediate", Organization: []string{"nhid tests"}},
		NotBefore:             s.start,
		NotAfter:              s.start.Add(10 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, s.root, &s.intermediateKey.PublicKey, rootKey)
	s.rekorKey, s.ctKey = newECKey(t), newECKey(t)
	return s
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issue signs tmpl with parentKey (self-signed when parent is nil).
func issue(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SerialNumber = serial
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatalf("issue certificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// logID is a log's ID: the SHA-256 of its public key.
func logID(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return sum[:]
}

// LogID is the hex ID of its Rekor log, as a Rekor bundle names it.
func (s *FakeSigstore) LogID(t testing.TB) string {
	t.Helper()
	return hex.EncodeToString(logID(t, &s.rekorKey.PublicKey))
}

// TrustedRoot returns its trusted_root.json: the CA, the Rekor log and
// the CT log.
func (s *FakeSigstore) TrustedRoot(t testing.TB) []byte {
	t.Helper()
	rekorID, ctID := logID(t, &s.rekorKey.PublicKey), logID(t, &s.ctKey.PublicKey)
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01,
		[]root.CertificateAuthority{&root.FulcioCertificateAuthority{
			Root: s.root, Intermediates: []*x509.Certificate{s.intermediate},
			ValidityPeriodStart: s.start, ValidityPeriodEnd: s.FulcioValidUntil, URI: "https://fulcio.test",
		}},
		map[string]*root.TransparencyLog{hex.EncodeToString(ctID): {
			BaseURL: "https://ctfe.test", ID: ctID, ValidityPeriodStart: s.start,
			HashFunc: crypto.SHA256, PublicKey: &s.ctKey.PublicKey, SignatureHashFunc: crypto.SHA256,
		}},
		nil,
		map[string]*root.TransparencyLog{hex.EncodeToString(rekorID): {
			BaseURL: "https://rekor.test", ID: rekorID, ValidityPeriodStart: s.start, ValidityPeriodEnd: s.RekorValidUntil,
			HashFunc: crypto.SHA256, PublicKey: &s.rekorKey.PublicKey, SignatureHashFunc: crypto.SHA256,
		}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatalf("trusted root JSON: %v", err)
	}
	return b
}

// LeafOptions shapes a signing certificate.
type LeafOptions struct {
	// Subject is the SAN: a URI when it has a scheme, else an email.
	Subject string
	// Issuer is the OIDC issuer, in extension 1.3.6.1.4.1.57264.1.8, or
	// the deprecated .1.1 with LegacyIssuerOID.
	Issuer          string
	LegacyIssuerOID bool
	// NotBefore and NotAfter default to a minute ago and nine minutes on:
	// Fulcio's ten-minute certificates.
	NotBefore, NotAfter time.Time
	// SCT embeds a signed certificate timestamp of the CT log, or of
	// SCTLog's CT log when set.
	SCT    bool
	SCTLog *FakeSigstore
}

// Leaf is a signing certificate and its key.
type Leaf struct {
	Cert *x509.Certificate
	// PEM is the certificate, Chain the intermediate and root, as the
	// cosign v2 annotations hold them.
	PEM, Chain []byte
	key        *ecdsa.PrivateKey
}

// Leaf issues a signing certificate for a new key.
func (s *FakeSigstore) Leaf(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	return s.issueLeaf(t, newECKey(t), o)
}

// ReissueLeaf issues another certificate for l's key.
func (s *FakeSigstore) ReissueLeaf(t testing.TB, l *Leaf, o LeafOptions) *Leaf {
	t.Helper()
	return s.issueLeaf(t, l.key, o)
}

func (s *FakeSigstore) issueLeaf(t testing.TB, key *ecdsa.PrivateKey, o LeafOptions) *Leaf {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Minute)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = o.NotBefore.Add(10 * time.Minute)
	}
	tmpl := &x509.Certificate{
		NotBefore:   o.NotBefore,
		NotAfter:    o.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	if strings.Contains(o.Subject, "://") {
		u, err := url.Parse(o.Subject)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	} else {
		tmpl.EmailAddresses = []string{o.Subject}
	}
	if o.LegacyIssuerOID {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: legacyIssuerOID, Value: []byte(o.Issuer)})
	} else {
		v, err := asn1.MarshalWithParams(o.Issuer, "utf8")
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: issuerOID, Value: v})
	}
	var cert *x509.Certificate
	if o.SCT {
		ctLog := s
		if o.SCTLog != nil {
			ctLog = o.SCTLog
		}
		cert = s.issueWithSCT(t, tmpl, &key.PublicKey, ctLog.ctKey)
	} else {
		cert = issue(t, tmpl, s.intermediate, &key.PublicKey, s.intermediateKey)
	}
	return &Leaf{Cert: cert, PEM: pemOf(t, cert), Chain: append(pemOf(t, s.intermediate), pemOf(t, s.root)...), key: key}
}

func pemOf(t testing.TB, c *x509.Certificate) []byte {
	t.Helper()
	b, err := cryptoutils.MarshalCertificateToPEM(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// issueWithSCT issues tmpl with an embedded SCT, as Fulcio does: the CT
// log signs the certificate without its SCT list (the precertificate's
// TBS) and the issuer's key hash. The certificate is issued twice, first
// with a placeholder list in the same place, so that the TBS the log
// signs is the final one's minus the list.
func (s *FakeSigstore) issueWithSCT(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, ctKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	base := tmpl.ExtraExtensions
	tmpl.ExtraExtensions = append(append([]pkix.Extension(nil), base...), sctListExtension(t, []byte{0}))
	draft := issue(t, tmpl, s.intermediate, pub, s.intermediateKey)

	chain := make([]*ctx509.Certificate, 0, 2)
	for _, c := range []*x509.Certificate{draft, s.intermediate} {
		cc, err := ctx509.ParseCertificate(c.Raw)
		if err != nil && ctx509.IsFatal(err) {
			t.Fatalf("parse for CT: %v", err)
		}
		chain = append(chain, cc)
	}
	sct := ct.SignedCertificateTimestamp{SCTVersion: ct.V1, Timestamp: uint64(tmpl.NotBefore.UnixMilli())}
	copy(sct.LogID.KeyID[:], logID(t, &ctKey.PublicKey))
	leaf, err := ct.MerkleTreeLeafForEmbeddedSCT(chain, sct.Timestamp)
	if err != nil {
		t.Fatal(err)
	}
	input, err := ct.SerializeSCTSignatureInput(sct, ct.LogEntry{Leaf: *leaf})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(input)
	sig, err := ecdsa.SignASN1(rand.Reader, ctKey, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sct.Signature = ct.DigitallySigned{
		Algorithm: cttls.SignatureAndHashAlgorithm{Hash: cttls.SHA256, Signature: cttls.ECDSA},
		Signature: sig,
	}
	raw, err := cttls.Marshal(sct)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.ExtraExtensions = append(append([]pkix.Extension(nil), base...), sctListExtension(t, raw))
	return issue(t, tmpl, s.intermediate, pub, s.intermediateKey)
}

// sctListExtension embeds one serialized SCT.
func sctListExtension(t testing.TB, sct []byte) pkix.Extension {
	t.Helper()
	list, err := cttls.Marshal(ctx509.SignedCertificateTimestampList{SCTList: []ctx509.SerializedSCT{{Val: sct}}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := asn1.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: sctListOID, Value: v}
}
