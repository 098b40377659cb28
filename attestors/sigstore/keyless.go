package sigstore

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/nhid/nhid/pkg/telemetry"
)

// Cosign's keyless bundle format.
const (
	// BundleMediaTypePrefix starts every Sigstore bundle media type
	// ("application/vnd.dev.sigstore.bundle.v0.3+json").
	BundleMediaTypePrefix = "application/vnd.dev.sigstore.bundle"
	// SignPredicateType is the in-toto predicate type of a cosign image
	// signature: a bundle of any other predicate is an attestation (SLSA
	// provenance, an SBOM), not a signature, and is not accepted as one.
	SignPredicateType = "https://sigstore.dev/cosign/sign/v1"
)

// keylessVerifier checks bundles against a trusted root and the accepted
// signer identities.
type keylessVerifier struct {
	verifier   *verify.Verifier
	identities []verify.PolicyOption
	// trusted is the trusted root the verifier checks against; the cosign
	// v2 path looks up Rekor log keys in it for clearer refusals.
	trusted root.TrustedMaterial
}

// newKeylessVerifier returns nil when keyless verification is not
// configured.
func newKeylessVerifier(rootJSON []byte, ids []Identity, skipSCT bool) (*keylessVerifier, error) {
	if len(rootJSON) == 0 {
		if len(ids) > 0 {
			return nil, errors.New("Identities: keyless identities need a TrustedRoot")
		}
		return nil, nil
	}
	if len(ids) == 0 {
		return nil, errors.New("Identities: a TrustedRoot needs at least one accepted signer identity, or any certificate it issued would do")
	}
	tr, err := root.NewTrustedRootFromJSON(rootJSON)
	if err != nil {
		return nil, fmt.Errorf("TrustedRoot: %w", err)
	}
	opts := []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1)}
	if !skipSCT {
		opts = append(opts, verify.WithSignedCertificateTimestamps(1))
	}
	v, err := verify.NewVerifier(tr, opts...)
	if err != nil {
		return nil, fmt.Errorf("TrustedRoot: %w", err)
	}
	kv := &keylessVerifier{verifier: v, trusted: tr}
	for i, id := range ids {
		if (id.Subject == "") == (id.SubjectRegexp == "") || (id.Issuer == "") == (id.IssuerRegexp == "") {
			return nil, fmt.Errorf("Identities[%d]: set exactly one of Subject and SubjectRegexp, and exactly one of Issuer and IssuerRegexp", i)
		}
		ci, err := verify.NewShortCertificateIdentity(id.Issuer, anchor(id.IssuerRegexp), id.Subject, anchor(id.SubjectRegexp))
		if err != nil {
			return nil, fmt.Errorf("Identities[%d]: %w", i, err)
		}
		kv.identities = append(kv.identities, verify.WithCertificateIdentity(ci))
	}
	return kv, nil
}

// anchor makes a regular expression match whole values: an unanchored
// "@example.com" would also accept "x@example.com.evil.org".
func anchor(re string) string {
	if re == "" {
		return ""
	}
	return "^(?:" + strings.TrimSuffix(strings.TrimPrefix(re, "^"), "$") + ")$"
}

// checkBundle records who signed raw, if raw is a valid signature bundle
// of ref: by a configured key (the bundle carries a public key hint) or
// keyless by an accepted identity (it carries a certificate).
func (v *Verifier) checkBundle(log *slog.Logger, ref name.Digest, raw []byte, b *builder) {
	var bd bundle.Bundle
	if err := bd.UnmarshalJSON(raw); err != nil {
		log.Warn("ignoring a malformed Sigstore bundle", telemetry.Error, err)
		return
	}
	digest, err := hex.DecodeString(strings.TrimPrefix(ref.DigestStr(), "sha256:"))
	if err != nil {
		log.Warn("image digest is not hex", telemetry.Error, err)
		return
	}
	artifact := verify.WithArtifactDigest("sha256", digest)
	if bd.GetVerificationMaterial().GetPublicKey() != nil {
		for _, k := range v.keys {
			res, err := k.bundles.Verify(&bd, verify.NewPolicy(artifact, verify.WithKey()))
			if err == nil && isImageSignature(log, res) {
				b.signedBy[k.name] = true
			}
		}
		return
	}
	if v.keyless == nil {
		return
	}
	res, err := v.keyless.verifier.Verify(&bd, verify.NewPolicy(artifact, v.keyless.identities...))
	if err != nil {
		log.Info("Sigstore bundle does not verify", telemetry.Error, err)
		return
	}
	if !isImageSignature(log, res) {
		return
	}
	if res.Signature == nil || res.Signature.Certificate == nil {
		log.Info("verified Sigstore bundle has no signing certificate; ignoring it")
		return
	}
	b.subjects[res.Signature.Certificate.SubjectAlternativeName] = true
	b.issuers[res.Signature.Certificate.Extensions.Issuer] = true
}

// isImageSignature says whether a verified bundle is a cosign image
// signature rather than an attestation about the image.
func isImageSignature(log *slog.Logger, res *verify.VerificationResult) bool {
	if res.Statement == nil || res.Statement.GetPredicateType() != SignPredicateType {
		log.Info("verified Sigstore bundle is not an image signature; ignoring it", "predicate_type", res.Statement.GetPredicateType())
		return false
	}
	return true
}
