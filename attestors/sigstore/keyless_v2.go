package sigstore

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/google/go-containerregistry/pkg/name"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/nhid/nhid/pkg/telemetry"
)

// cosign v2's keyless signature annotations on a simple-signing layer.
const (
	// CertificateAnnotation holds the Fulcio signing certificate (PEM).
	CertificateAnnotation = "dev.sigstore.cosign/certificate"
	// ChainAnnotation holds the certificates above it (PEM), leaf's
	// issuer first.
	ChainAnnotation = "dev.sigstore.cosign/chain"
	// RekorBundleAnnotation holds Rekor's answer to the upload: the log
	// entry and its signed entry timestamp (JSON).
	RekorBundleAnnotation = "dev.sigstore.cosign/bundle"
)

const (
	// legacyBundleMediaType is the Sigstore bundle version whose log
	// entries may carry only an inclusion promise, as cosign v2's do.
	legacyBundleMediaType = "application/vnd.dev.sigstore.bundle+json;version=0.1"
	// hashedRekordKind is the Rekor entry kind cosign v2 writes for an
	// image signature.
	hashedRekordKind = "hashedrekord"
	// maxAnnotationSize bounds each keyless annotation (a chain is a few
	// kilobytes).
	maxAnnotationSize = 64 << 10
	// maxChainCerts bounds the chain annotation.
	maxChainCerts = 10
)

// keylessMaterial is a layer's keyless annotations, as stored.
type keylessMaterial struct {
	certificate []byte
	chain       []byte
	rekorBundle []byte
	// oversized names an annotation larger than maxAnnotationSize, which
	// makes the signature malformed.
	oversized string
}

// keylessMaterialOf reads the keyless annotations.
func keylessMaterialOf(annotations map[string]string) keylessMaterial {
	var m keylessMaterial
	for k, dst := range map[string]*[]byte{
		CertificateAnnotation: &m.certificate,
		ChainAnnotation:       &m.chain,
		RekorBundleAnnotation: &m.rekorBundle,
	} {
		v := annotations[k]
		if len(v) > maxAnnotationSize {
			m.oversized = k
			continue
		}
		*dst = []byte(v)
	}
	return m
}

// isKeyless says whether the layer claims to be a keyless signature.
func (m keylessMaterial) isKeyless() bool {
	return len(m.certificate) > 0 || m.oversized == CertificateAnnotation
}

// rekorBundle is the RekorBundleAnnotation's content (cosign's
// bundle.RekorBundle).
type rekorBundle struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

// checkKeylessSimpleSigning records the identity that signed s, if s is a
// cosign v2 keyless signature of exactly ref by an accepted identity.
//
// The annotations become a Sigstore bundle v0.1 that the v3 path's
// verifier checks: the Rekor entry's SET against the log key of the
// trusted root its logID names, the entry against this signature,
// certificate and payload digest, the certificate's chain to a trusted
// Fulcio CA and its validity at the integrated time, the CT timestamp
// (unless SkipSCT), the signature over the payload and the identity.
func (v *Verifier) checkKeylessSimpleSigning(log *slog.Logger, ref name.Digest, s simpleSignature, b *builder) {
	bd, err := legacyBundle(s)
	if err != nil {
		log.Warn("ignoring a malformed cosign v2 keyless signature", telemetry.Error, err)
		return
	}
	if err := v.keyless.checkSET(bd); err != nil {
		log.Info("cosign v2 keyless signature does not verify", telemetry.Error, err)
		return
	}
	policy := verify.NewPolicy(verify.WithArtifact(bytes.NewReader(s.payload)), v.keyless.identities...)
	res, err := v.keyless.verifier.Verify(bd, policy)
	if err != nil {
		log.Info("cosign v2 keyless signature does not verify", telemetry.Error, err)
		return
	}
	if res.Signature == nil || res.Signature.Certificate == nil {
		log.Info("verified cosign v2 keyless signature has no signing certificate; ignoring it")
		return
	}
	id := res.Signature.Certificate
	if err := checkPayload(ref, s.payload); err != nil {
		log.Warn("refusing a validly signed payload that is not this image's", "subject", id.SubjectAlternativeName, telemetry.Error, err)
		return
	}
	b.subjects[id.SubjectAlternativeName] = true
	b.issuers[id.Extensions.Issuer] = true
}

// checkSET verifies the signed entry timestamp of bd's log entry. The
// verifier checks it again; it skips an entry whose SET does not verify
// and then reports only "not enough verified log entries", which would
// not tell an operator that the log's promise was forged or replayed.
func (kv *keylessVerifier) checkSET(bd *bundle.Bundle) error {
	entries, err := bd.TlogEntries()
	if err != nil {
		return fmt.Errorf("Rekor entry: %w", err)
	}
	if len(entries) != 1 {
		return fmt.Errorf("%d Rekor entries, want 1", len(entries))
	}
	if err := tlog.VerifySET(entries[0], kv.trusted.RekorLogs()); err != nil {
		return fmt.Errorf("Rekor signed entry timestamp (log %x, index %d): %w", entries[0].LogKeyID(), entries[0].LogIndex(), err)
	}
	return nil
}

// legacyBundle converts a cosign v2 keyless signature into a Sigstore
// bundle v0.1, the version whose log entries may carry only an inclusion
// promise: a message signature over the payload's SHA-256, the
// certificate chain, and the Rekor entry with its SET.
func legacyBundle(s simpleSignature) (*bundle.Bundle, error) {
	if s.keyless.oversized != "" {
		return nil, fmt.Errorf("%s: larger than %d bytes", s.keyless.oversized, maxAnnotationSize)
	}
	leaf, err := cryptoutils.UnmarshalCertificatesFromPEMLimited(s.keyless.certificate, 2)
	if err != nil || len(leaf) != 1 {
		return nil, fmt.Errorf("%s: want one PEM certificate: %v", CertificateAnnotation, err)
	}
	chain, err := parseChain(s.keyless.chain, leaf[0])
	if err != nil {
		return nil, err
	}
	tle, err := logEntry(s.keyless.rekorBundle)
	if err != nil {
		return nil, err
	}
	// sigstore-go takes only the leaf of a v0.1 bundle's chain and anchors
	// it in the trusted root's Fulcio CAs, so the chain annotation can
	// never add trust; it is carried for completeness.
	certs := []*protocommon.X509Certificate{{RawBytes: leaf[0].Raw}}
	for _, c := range chain {
		certs = append(certs, &protocommon.X509Certificate{RawBytes: c.Raw})
	}
	digest := sha256.Sum256(s.payload)
	b, err := bundle.NewBundle(&protobundle.Bundle{
		MediaType: legacyBundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:     &protobundle.VerificationMaterial_X509CertificateChain{X509CertificateChain: &protocommon.X509CertificateChain{Certificates: certs}},
			TlogEntries: []*protorekor.TransparencyLogEntry{tle},
		},
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: digest[:]},
			Signature:     s.signature,
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("as a Sigstore bundle: %w", err)
	}
	return b, nil
}

// parseChain reads the chain annotation and checks that it is the chain
// of leaf: each certificate signed the one before. Trust still comes from
// the trusted root alone (see legacyBundle), but a chain that does not
// belong to its certificate means the layer was tampered with, and is
// refused rather than silently ignored.
func parseChain(pemBytes []byte, leaf *x509.Certificate) ([]*x509.Certificate, error) {
	if len(pemBytes) == 0 {
		return nil, nil
	}
	chain, err := cryptoutils.UnmarshalCertificatesFromPEMLimited(pemBytes, maxChainCerts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ChainAnnotation, err)
	}
	child, childName := leaf, "the signing certificate"
	for i, c := range chain {
		if err := child.CheckSignatureFrom(c); err != nil {
			return nil, fmt.Errorf("%s: certificate %d (%s) did not issue %s: %w", ChainAnnotation, i, c.Subject, childName, err)
		}
		child, childName = c, fmt.Sprintf("certificate %d", i)
	}
	return chain, nil
}

// logEntry turns the Rekor bundle annotation into a log entry with an
// inclusion promise (the SET): what cosign v2 kept of Rekor's answer.
func logEntry(raw []byte) (*protorekor.TransparencyLogEntry, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("no %s annotation: without a Rekor entry there is no trusted time at which the short-lived certificate was valid", RekorBundleAnnotation)
	}
	var rb rekorBundle
	if err := json.Unmarshal(raw, &rb); err != nil {
		return nil, fmt.Errorf("%s: %w", RekorBundleAnnotation, err)
	}
	p := rb.Payload
	body, err := base64.StdEncoding.DecodeString(p.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: body: %w", RekorBundleAnnotation, err)
	}
	logID, err := hex.DecodeString(p.LogID)
	switch {
	case err != nil || len(logID) == 0:
		return nil, fmt.Errorf("%s: logID %q: want the log key's hex SHA-256", RekorBundleAnnotation, p.LogID)
	case len(rb.SignedEntryTimestamp) == 0:
		return nil, fmt.Errorf("%s: no SignedEntryTimestamp", RekorBundleAnnotation)
	case p.IntegratedTime <= 0 || p.LogIndex < 0:
		return nil, fmt.Errorf("%s: integratedTime %d, logIndex %d: want positive values", RekorBundleAnnotation, p.IntegratedTime, p.LogIndex)
	}
	var kind struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(body, &kind); err != nil {
		return nil, fmt.Errorf("%s: body: %w", RekorBundleAnnotation, err)
	}
	// A hashedrekord entry names the signature, the certificate and the
	// payload's digest, which sigstore-go compares with the layer's. The
	// older rekord kind (early cosign releases) is not one sigstore-go can
	// compare with a signature, so it is refused rather than half-checked.
	if kind.Kind != hashedRekordKind {
		return nil, fmt.Errorf("%s: Rekor entry of kind %q: only %s entries (what cosign v2 logs for an image signature) are supported", RekorBundleAnnotation, kind.Kind, hashedRekordKind)
	}
	return &protorekor.TransparencyLogEntry{
		LogIndex:          p.LogIndex,
		LogId:             &protocommon.LogId{KeyId: logID},
		KindVersion:       &protorekor.KindVersion{Kind: kind.Kind, Version: kind.APIVersion},
		IntegratedTime:    p.IntegratedTime,
		InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
		CanonicalizedBody: body,
	}, nil
}
