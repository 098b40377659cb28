// Package sigstore verifies container image signatures made with cosign
// and describes a verified image by selectors. It is both the "sigstore"
// workload attestor (the image of a caller's container, found by the
// container attestor) and a library for other attestors (the Kubernetes
// attestor hands it a pod container's image ID).
//
// Two kinds of signature are checked:
//
//   - key-based: cosign's "simple signing" payload in the image's
//     repository under the tag sha256-<hex>.sig, signed by one of the
//     configured public keys; the payload must name both the image digest
//     and its repository. Key-signed Sigstore bundles (cosign v3) attached
//     as referrers count too;
//   - keyless: Sigstore bundles (cosign v3, "--new-bundle-format") attached
//     to the image as OCI referrers, verified with sigstore-go against a
//     configured trusted_root.json and accepted signer identities; the
//     bundle must be an image signature (an in-toto statement of predicate
//     type https://sigstore.dev/cosign/sign/v1) whose subject is the digest.
//     cosign v2's keyless signatures in the .sig tag (a simple-signing
//     layer with certificate, chain and Rekor bundle annotations) are
//     turned into a Sigstore bundle v0.1 and verified the same way, offline:
//     the Rekor signed entry timestamp stands in for an inclusion proof.
//
// Selectors (type "sigstore"):
//
//	verified:true          at least one signature verified
//	signed_by:<key name>   verified by that configured public key
//	subject:<SAN>          keyless: the signing certificate's identity
//	issuer:<OIDC issuer>   keyless: who vouched for that identity
//
// An unsigned or wrongly signed image gets no selectors and a log line,
// never an error: an attestation error would drop the other attestors'
// selectors too. Errors are reserved for failures to look (a registry that
// cannot be reached), which are not cached.
package sigstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/nhid/nhid/attestors/internal/ttlcache"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Type is the selector type of the sigstore attestor.
const Type = "sigstore"

// Defaults for the fields Config leaves zero.
const (
	DefaultCacheTTL     = 10 * time.Minute
	DefaultCacheSize    = 1024
	DefaultFetchTimeout = 20 * time.Second
)

// PublicKey is a trusted signing key.
type PublicKey struct {
	// Name appears in the signed_by selector: letters, digits, ".", "_"
	// and "-".
	Name string
	// PEM is the PEM-encoded public key (ECDSA, RSA or Ed25519), as
	// `cosign generate-key-pair` writes it to cosign.pub.
	PEM []byte
}

// Identity is an accepted keyless signer: the signing certificate's
// subject alternative name and OIDC issuer, each matched exactly or by a
// regular expression (one of the two must be set for each).
type Identity struct {
	Subject       string
	SubjectRegexp string
	Issuer        string
	IssuerRegexp  string
}

// Config configures a Verifier.
type Config struct {
	// Log defaults to slog.Default().
	Log *slog.Logger
	// Clock expires cache entries; defaults to the wall clock.
	Clock clock.Clock
	// PublicKeys verify key-based signatures.
	PublicKeys []PublicKey
	// TrustedRoot is a Sigstore trusted_root.json (Fulcio CAs, Rekor and
	// CT logs, timestamp authorities) for keyless bundles. Keyless
	// verification is off when it is empty.
	TrustedRoot []byte
	// Identities are the keyless signers accepted; required with
	// TrustedRoot.
	Identities []Identity
	// SkipSCT accepts keyless certificates without a signed certificate
	// timestamp from a CT log (a private Fulcio without CT). Public-good
	// Sigstore certificates carry one; leave it false for them.
	SkipSCT bool
	// CacheTTL is how long a verification result is reused; default
	// DefaultCacheTTL. A newly signed image gets its selectors at the
	// latest after this long.
	CacheTTL time.Duration
	// CacheSize bounds how many images' results are kept; default
	// DefaultCacheSize.
	CacheSize int
	// FetchTimeout bounds fetching and verifying one image's
	// signatures; default DefaultFetchTimeout.
	FetchTimeout time.Duration
	// InsecureRegistries may be reached over plain HTTP (host or
	// host:port). Loopback registries always may; every other registry
	// needs HTTPS.
	InsecureRegistries []string
	// OCILayout, if set, is a directory holding an OCI image layout in
	// which signatures are looked up instead of in registries (for
	// air-gapped nodes): simple-signing manifests named by the
	// org.opencontainers.image.ref.name annotation "sha256-<hex>.sig",
	// and bundle manifests whose subject is the image.
	OCILayout string
	// Keychain authenticates to registries; default
	// authn.DefaultKeychain (docker config and credential helpers).
	Keychain authn.Keychain
}

// Verifier checks image signatures. It is safe for concurrent use.
type Verifier struct {
	log          *slog.Logger
	keys         []namedKey
	keyless      *keylessVerifier
	fetchTimeout time.Duration
	cache        *ttlcache.Cache[[]selector.Selector]
	source       source
}

// New returns a Verifier. At least one public key or a trusted root must
// be configured.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("sigstore: %w", err)
	}
	keys, err := loadKeys(cfg.PublicKeys)
	if err != nil {
		return nil, fmt.Errorf("sigstore: %w", err)
	}
	keyless, err := newKeylessVerifier(cfg.TrustedRoot, cfg.Identities, cfg.SkipSCT)
	if err != nil {
		return nil, fmt.Errorf("sigstore: %w", err)
	}
	if len(keys) == 0 && keyless == nil {
		return nil, errors.New("sigstore: configure public keys, a trusted root, or both")
	}
	cache, err := ttlcache.New[[]selector.Selector](cfg.CacheSize, cfg.CacheTTL, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("sigstore: %w", err)
	}
	src, err := newSource(cfg)
	if err != nil {
		return nil, fmt.Errorf("sigstore: %w", err)
	}
	return &Verifier{
		log:          cfg.Log.With(telemetry.Attestor, Type),
		keys:         keys,
		keyless:      keyless,
		fetchTimeout: cfg.FetchTimeout,
		cache:        cache,
		source:       src,
	}, nil
}

func (cfg *Config) setDefaults() error {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	var errs []error
	for _, d := range []struct {
		v    *time.Duration
		def  time.Duration
		name string
	}{{&cfg.CacheTTL, DefaultCacheTTL, "CacheTTL"}, {&cfg.FetchTimeout, DefaultFetchTimeout, "FetchTimeout"}} {
		switch {
		case *d.v < 0:
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", d.name, *d.v))
		case *d.v == 0:
			*d.v = d.def
		}
	}
	switch {
	case cfg.CacheSize < 0:
		errs = append(errs, fmt.Errorf("CacheSize: must not be negative, got %d", cfg.CacheSize))
	case cfg.CacheSize == 0:
		cfg.CacheSize = DefaultCacheSize
	}
	return errors.Join(errs...)
}

// Selectors returns the selectors of the image imageRef names, which must
// be "<repository>@sha256:<hex>" (a Kubernetes imageID, without any
// "docker-pullable://" prefix, has this form). An image without a valid
// signature gets no selectors and no error.
func (v *Verifier) Selectors(ctx context.Context, imageRef string) ([]selector.Selector, error) {
	ref, err := name.NewDigest(imageRef)
	if err != nil {
		return nil, fmt.Errorf("sigstore: image reference %q: want <repository>@sha256:<hex>: %w", imageRef, err)
	}
	key := ref.Context().Name() + "@" + ref.DigestStr()
	sels, err := v.cache.Do(ctx, key, v.fetchTimeout, func(ctx context.Context) ([]selector.Selector, bool, error) {
		sels, err := v.verify(ctx, ref)
		return sels, err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("sigstore: %s: %w", key, err)
	}
	return append([]selector.Selector(nil), sels...), nil
}

// verify fetches and checks every signature of ref.
func (v *Verifier) verify(ctx context.Context, ref name.Digest) ([]selector.Selector, error) {
	log := v.log.With(telemetry.Image, ref.Context().Name(), telemetry.Digest, ref.DigestStr())
	// Bundles may be key-signed too, so they are always looked for; the
	// .sig tag holds key-based and cosign v2 keyless signatures.
	found, err := v.source.fetch(ctx, ref, len(v.keys) > 0 || v.keyless != nil, true)
	if err != nil {
		return nil, err
	}
	b := newBuilder()
	for _, s := range found.simple {
		if len(v.keys) > 0 {
			v.checkSimpleSigning(log, ref, s, b)
		}
		if v.keyless != nil && s.keyless.isKeyless() {
			v.checkKeylessSimpleSigning(log, ref, s, b)
		}
	}
	for _, raw := range found.bundles {
		v.checkBundle(log, ref, raw, b)
	}
	sels := b.selectors(log)
	if len(sels) == 0 {
		log.Info("image has no valid signature; it gets no sigstore selectors",
			"simple_signatures", len(found.simple), "bundles", len(found.bundles))
	}
	return sels, nil
}
