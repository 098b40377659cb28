package sigstoretest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Cosign's simple-signing format, as cosign writes it.
const (
	simpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	signatureAnnotation    = "dev.cosignproject.cosign/signature"
)

// Key is a cosign signing key pair.
type Key struct {
	// PEM is the public key, as cosign.pub holds it.
	PEM    []byte
	signer signature.Signer
}

// NewKey generates an ECDSA P-256 key, cosign's default.
func NewKey(t testing.TB) *Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signature.LoadSigner(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &Key{PEM: pem, signer: signer}
}

// SignPayload signs payload as cosign does.
func (k *Key) SignPayload(t testing.TB, payload []byte) []byte {
	t.Helper()
	sig, err := k.signer.SignMessage(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// Payload is the simple-signing payload cosign signs for ref.
func Payload(t testing.TB, ref name.Digest) []byte {
	t.Helper()
	return PayloadFor(t, ref.Context().Name(), ref.DigestStr())
}

// PayloadFor is the simple-signing payload naming repository and digest.
func PayloadFor(t testing.TB, repository, digest string) []byte {
	t.Helper()
	p := map[string]any{
		"critical": map[string]any{
			"identity": map[string]string{"docker-reference": repository},
			"image":    map[string]string{"docker-manifest-digest": digest},
			"type":     "cosign container image signature",
		},
		"optional": map[string]string{"creator": "nhid tests"},
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Sign signs ref with k and attaches the signature as cosign does.
func Sign(t testing.TB, ref name.Digest, k *Key) {
	t.Helper()
	payload := Payload(t, ref)
	Attach(t, ref, payload, k.SignPayload(t, payload))
}

// SignatureTag is the tag cosign keeps ref's signatures under.
func SignatureTag(ref name.Digest) name.Tag {
	return ref.Context().Tag(strings.Replace(ref.DigestStr(), ":", "-", 1) + ".sig")
}

// Attach adds a simple-signing layer (payload and signature) to the
// signature image of at, creating it if needed, as `cosign attach
// signature` does.
func Attach(t testing.TB, at name.Digest, payload, sig []byte) {
	t.Helper()
	attach(t, at, payload, sig, nil)
}

// attach adds a simple-signing layer with the signature and further
// annotations.
func attach(t testing.TB, at name.Digest, payload, sig []byte, annotations map[string]string) {
	t.Helper()
	tag := SignatureTag(at)
	base, err := remote.Image(tag)
	if err != nil {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	ann := map[string]string{signatureAnnotation: base64.StdEncoding.EncodeToString(sig)}
	for k, v := range annotations {
		ann[k] = v
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(payload, simpleSigningMediaType),
		Annotations: ann,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatalf("push signature %s: %v", tag, err)
	}
}

// SignatureImage returns the signature image of ref (to copy it
// elsewhere in tests).
func SignatureImage(t testing.TB, ref name.Digest) v1.Image {
	t.Helper()
	img, err := remote.Image(SignatureTag(ref))
	if err != nil {
		t.Fatalf("fetch %s: %v", SignatureTag(ref), err)
	}
	return img
}
