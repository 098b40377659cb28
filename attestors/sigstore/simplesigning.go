package sigstore

import (
	"bytes"
	"crypto"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Cosign's simple-signing format.
const (
	// SimpleSigningMediaType is the media type of a signature layer.
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// SignatureAnnotation holds a layer's base64 signature.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// SimpleSigningType is the payload's critical.type.
	SimpleSigningType = "cosign container image signature"
)

// keyNamePattern restricts key names to what reads well in a selector.
var keyNamePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

type namedKey struct {
	name     string
	verifier signature.Verifier
	// bundles verifies key-signed Sigstore bundles (cosign v3 signs with
	// a key into a bundle too).
	bundles *verify.Verifier
}

func loadKeys(keys []PublicKey) ([]namedKey, error) {
	out := make([]namedKey, 0, len(keys))
	seen := map[string]bool{}
	for i, k := range keys {
		if !keyNamePattern.MatchString(k.Name) {
			return nil, fmt.Errorf("PublicKeys[%d].Name %q: want 1 to 128 letters, digits, '.', '_' or '-'", i, k.Name)
		}
		if seen[k.Name] {
			return nil, fmt.Errorf("PublicKeys[%d].Name %q: used twice", i, k.Name)
		}
		seen[k.Name] = true
		pub, err := cryptoutils.UnmarshalPEMToPublicKey(k.PEM)
		if err != nil {
			return nil, fmt.Errorf("PublicKeys[%d] (%s): %w", i, k.Name, err)
		}
		// cosign signs the payload's SHA-256 whatever the key type.
		ver, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("PublicKeys[%d] (%s): %w", i, k.Name, err)
		}
		bv, err := keyBundleVerifier(ver)
		if err != nil {
			return nil, fmt.Errorf("PublicKeys[%d] (%s): %w", i, k.Name, err)
		}
		out = append(out, namedKey{name: k.Name, verifier: ver, bundles: bv})
	}
	return out, nil
}

// keyBundleVerifier checks bundles against one key, whatever key hint
// they carry (cosign's hint is not a name the operator configured). A key
// does not expire, so no trusted timestamp is needed.
func keyBundleVerifier(ver signature.Verifier) (*verify.Verifier, error) {
	key := root.NewExpiringKey(ver, time.Time{}, time.Time{})
	tm := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return key, nil })
	return verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
}

// simpleSignature is one layer of a .sig image: the payload and the
// signature over it, and for a cosign v2 keyless signature the signing
// certificate, its chain and Rekor's bundle, as their annotations hold them.
type simpleSignature struct {
	payload   []byte
	signature []byte
	keyless   keylessMaterial
}

// simpleSigningPayload is the part of the payload that is checked.
type simpleSigningPayload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// checkSimpleSigning records the keys that signed s, if s is a signature
// of exactly ref: a signature copied from another image or repository
// verifies, but names that other image, and is refused.
func (v *Verifier) checkSimpleSigning(log *slog.Logger, ref name.Digest, s simpleSignature, b *builder) {
	var signers []string
	for _, k := range v.keys {
		if k.verifier.VerifySignature(bytes.NewReader(s.signature), bytes.NewReader(s.payload)) == nil {
			signers = append(signers, k.name)
		}
	}
	if len(signers) == 0 {
		log.Debug("simple-signing signature matches no configured key")
		return
	}
	if err := checkPayload(ref, s.payload); err != nil {
		log.Warn("refusing a validly signed payload that is not this image's", "keys", signers, telemetry.Error, err)
		return
	}
	for _, n := range signers {
		b.signedBy[n] = true
	}
}

func checkPayload(ref name.Digest, payload []byte) error {
	var p simpleSigningPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return fmt.Errorf("payload is not JSON: %w", err)
	}
	if p.Critical.Type != SimpleSigningType {
		return fmt.Errorf("payload type %q, want %q", p.Critical.Type, SimpleSigningType)
	}
	if got := p.Critical.Image.DockerManifestDigest; got != ref.DigestStr() {
		return fmt.Errorf("payload signs digest %q, not %q", got, ref.DigestStr())
	}
	signed, err := name.NewRepository(p.Critical.Identity.DockerReference)
	if err != nil {
		return fmt.Errorf("payload docker-reference %q: %w", p.Critical.Identity.DockerReference, err)
	}
	if signed.Name() != ref.Context().Name() {
		return fmt.Errorf("payload signs repository %q, not %q", signed.Name(), ref.Context().Name())
	}
	return nil
}

// builder gathers what the verified signatures establish.
type builder struct {
	signedBy map[string]bool
	subjects map[string]bool
	issuers  map[string]bool
}

func newBuilder() *builder {
	return &builder{signedBy: map[string]bool{}, subjects: map[string]bool{}, issuers: map[string]bool{}}
}

func (b *builder) selectors(log *slog.Logger) []selector.Selector {
	if len(b.signedBy)+len(b.subjects)+len(b.issuers) == 0 {
		return nil
	}
	var sels []selector.Selector
	add := func(kind, value string) {
		s, err := selector.New(Type, kind+":"+value)
		if err != nil {
			log.Warn("leaving out unrepresentable selector", "kind", kind, telemetry.Error, err)
			return
		}
		sels = append(sels, s)
	}
	add("verified", "true")
	for _, kv := range []struct {
		kind string
		set  map[string]bool
	}{{"signed_by", b.signedBy}, {"subject", b.subjects}, {"issuer", b.issuers}} {
		for _, v := range slices.Sorted(maps.Keys(kv.set)) {
			add(kv.kind, v)
		}
	}
	return sels
}
