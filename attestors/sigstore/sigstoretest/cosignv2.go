package sigstoretest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// cosign v2's keyless annotations.
const (
	certificateAnnotation = "dev.sigstore.cosign/certificate"
	chainAnnotation       = "dev.sigstore.cosign/chain"
	bundleAnnotation      = "dev.sigstore.cosign/bundle"
)

// Sign signs payload with the leaf's key, as cosign does (ECDSA over the
// payload's SHA-256).
func (l *Leaf) Sign(t testing.TB, payload []byte) []byte {
	t.Helper()
	digest := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, l.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// HashedRekord is the canonical body of the Rekor hashedrekord v0.0.1
// entry of sig over payload by certPEM's key.
func HashedRekord(t testing.TB, payload, sig, certPEM []byte) []byte {
	t.Helper()
	digest := sha256.Sum256(payload)
	body, err := json.Marshal(map[string]any{
		"apiVersion": "0.0.1",
		"kind":       "hashedrekord",
		"spec": map[string]any{
			"data": map[string]any{"hash": map[string]string{"algorithm": "sha256", "value": hex.EncodeToString(digest[:])}},
			"signature": map[string]any{
				"content":   base64.StdEncoding.EncodeToString(sig),
				"publicKey": map[string]string{"content": base64.StdEncoding.EncodeToString(certPEM)},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// RekorEntry is a log entry as cosign v2 keeps it in the bundle
// annotation: the body, where it sits in the log, and the log's signed
// entry timestamp (SET) over all of that.
type RekorEntry struct {
	Body           []byte
	IntegratedTime int64
	LogIndex       int64
	LogID          string
	SET            []byte
}

// Log enters body into its Rekor log at time at.
func (s *FakeSigstore) Log(t testing.TB, body []byte, at time.Time) RekorEntry {
	t.Helper()
	e := RekorEntry{Body: body, IntegratedTime: at.Unix(), LogIndex: s.logIndex.Add(1), LogID: s.LogID(t)}
	e.SET = s.SignSET(t, e)
	return e
}

// SignSET signs e's body, integrated time, log index and log ID with its
// Rekor log's key, whichever log e names (to forge SETs in tests).
//
// The SET is Rekor's ECDSA signature over the SHA-256 of the RFC 8785
// canonical JSON of {body (base64), integratedTime, logID (hex),
// logIndex}. For these values (integers, and base64 and hex strings that
// need no escaping) that is the members in lexical order without
// whitespace, which encoding/json writes for this struct.
func (s *FakeSigstore) SignSET(t testing.TB, e RekorEntry) []byte {
	t.Helper()
	canonical, err := json.Marshal(struct {
		Body           string `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogID          string `json:"logID"`
		LogIndex       int64  `json:"logIndex"`
	}{base64.StdEncoding.EncodeToString(e.Body), e.IntegratedTime, e.LogID, e.LogIndex})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(canonical)
	sig, err := ecdsa.SignASN1(rand.Reader, s.rekorKey, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// JSON is the dev.sigstore.cosign/bundle annotation holding e.
func (e RekorEntry) JSON(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"SignedEntryTimestamp": base64.StdEncoding.EncodeToString(e.SET),
		"Payload": map[string]any{
			"body":           base64.StdEncoding.EncodeToString(e.Body),
			"integratedTime": e.IntegratedTime,
			"logIndex":       e.LogIndex,
			"logID":          e.LogID,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// V2Signature is a cosign v2 keyless signature: one layer of the .sig
// image. Tests tamper with its fields before attaching it.
type V2Signature struct {
	Payload, Signature []byte
	// Certificate and Chain are PEM; an empty Chain is left out.
	Certificate, Chain []byte
	// Entry is the Rekor entry; nil leaves the bundle annotation out.
	Entry *RekorEntry
}

// NewV2Signature signs payload with leaf and enters the signature into
// log's Rekor log at time at, as `cosign sign` (v2, keyless) does.
func NewV2Signature(t testing.TB, leaf *Leaf, payload []byte, log *FakeSigstore, at time.Time) V2Signature {
	t.Helper()
	sig := leaf.Sign(t, payload)
	e := log.Log(t, HashedRekord(t, payload, sig, leaf.PEM), at)
	return V2Signature{Payload: payload, Signature: sig, Certificate: leaf.PEM, Chain: leaf.Chain, Entry: &e}
}

// SignV2 signs ref keyless now with a new certificate shaped by o, logged
// in its own Rekor log; it returns the leaf too, for further signatures.
func (s *FakeSigstore) SignV2(t testing.TB, ref name.Digest, o LeafOptions) (V2Signature, *Leaf) {
	t.Helper()
	leaf := s.Leaf(t, o)
	return NewV2Signature(t, leaf, Payload(t, ref), s, time.Now()), leaf
}

// AttachV2 adds sig to the signature image of at, as cosign v2 does.
func AttachV2(t testing.TB, at name.Digest, sig V2Signature) {
	t.Helper()
	ann := map[string]string{certificateAnnotation: string(sig.Certificate)}
	if len(sig.Chain) > 0 {
		ann[chainAnnotation] = string(sig.Chain)
	}
	if sig.Entry != nil {
		ann[bundleAnnotation] = string(sig.Entry.JSON(t))
	}
	attach(t, at, sig.Payload, sig.Signature, ann)
}
