package sigstoretest

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/proto"
)

// Keyless bundle constants, as cosign v3 writes them.
const (
	// BundleMediaType is the media type of a v0.3 Sigstore bundle.
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// SignPredicateType is the predicate type of a cosign image signature.
	SignPredicateType = "https://sigstore.dev/cosign/sign/v1"
	// ProvenancePredicateType is an attestation's, which is no signature.
	ProvenancePredicateType = "https://slsa.dev/provenance/v1"
)

// Sigstore is a private, in-memory Sigstore: a Fulcio CA issuing
// short-lived certificates for OIDC identities, a Rekor log, a CT log key
// and a timestamp authority.
type Sigstore struct {
	vs *ca.VirtualSigstore
}

// NewSigstore creates one.
func NewSigstore(t testing.TB) *Sigstore {
	t.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatalf("virtual sigstore: %v", err)
	}
	return &Sigstore{vs: vs}
}

// TrustedRoot returns its trusted_root.json.
func (s *Sigstore) TrustedRoot(t testing.TB) []byte {
	t.Helper()
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, s.vs.FulcioCertificateAuthorities(),
		rawLogIDs(t, s.vs.CTLogs()), s.vs.TimestampingAuthorities(), rawLogIDs(t, s.vs.RekorLogs()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatalf("trusted root JSON: %v", err)
	}
	return b
}

// rawLogIDs returns logs whose IDs are the raw key hashes: the virtual
// Sigstore keeps them hex-encoded, which a trusted_root.json would then
// encode once more, naming logs no entry refers to.
func rawLogIDs(t testing.TB, logs map[string]*root.TransparencyLog) map[string]*root.TransparencyLog {
	t.Helper()
	out := make(map[string]*root.TransparencyLog, len(logs))
	for id, l := range logs {
		raw, err := hex.DecodeString(id)
		if err != nil {
			t.Fatalf("log id %q: %v", id, err)
		}
		c := *l
		c.ID = raw
		out[id] = &c
	}
	return out
}

// Bundle signs an in-toto statement about ref of predicateType as
// identity (vouched for by issuer), logs it, and returns the bundle JSON.
func (s *Sigstore) Bundle(t testing.TB, ref name.Digest, identity, issuer, predicateType string) []byte {
	t.Helper()
	statement := inTotoStatement(t, ref, predicateType)
	ent, err := s.vs.AttestAtTime(identity, issuer, statement, time.Now().Add(5*time.Minute), true)
	if err != nil {
		t.Fatalf("virtual sigstore sign: %v", err)
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		t.Fatal(err)
	}
	env := sc.EnvelopeContent().RawEnvelope()
	payload, err := env.DecodeB64Payload()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		t.Fatal(err)
	}
	pb := &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:     &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
			TlogEntries: []*protorekor.TransparencyLogEntry{s.logEntry(t, ent)},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: payload, PayloadType: env.PayloadType,
			Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		t.Fatalf("bundle: %v", err)
	}
	out, err := b.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// logEntry is the entity's Rekor entry with its kind and its signed entry
// timestamp (the log's promise of inclusion), as Rekor returns them.
func (s *Sigstore) logEntry(t testing.TB, ent *ca.TestEntity) *protorekor.TransparencyLogEntry {
	t.Helper()
	entries, err := ent.TlogEntries()
	if err != nil || len(entries) != 1 {
		t.Fatalf("tlog entries: %v (%d)", err, len(entries))
	}
	tle := proto.Clone(entries[0].TransparencyLogEntry()).(*protorekor.TransparencyLogEntry)
	tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
	set, err := s.vs.RekorSignPayload(tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(tle.CanonicalizedBody),
		IntegratedTime: tle.IntegratedTime,
		LogIndex:       tle.LogIndex,
		LogID:          hex.EncodeToString(tle.LogId.KeyId),
	})
	if err != nil {
		t.Fatal(err)
	}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	return tle
}

// AttachBundle stores bundleJSON as a referrer of ref, as cosign v3 does.
func AttachBundle(t testing.TB, ref name.Digest, bundleJSON []byte) {
	t.Helper()
	desc, err := remote.Head(ref)
	if err != nil {
		t.Fatalf("head %s: %v", ref, err)
	}
	subject := *desc
	subject.Platform, subject.Annotations = nil, nil
	pushArtifact(t, ref.Context(), BundleMediaType, bundleJSON, types.MediaType(BundleMediaType),
		map[string]string{"org.opencontainers.image.title": strings.Replace(ref.DigestStr(), ":", "-", 1) + ".sigstore.json"},
		&subject)
}

// KeyBundle signs an in-toto statement about ref of predicateType with k
// into a bundle carrying k's public key hint, as `cosign sign --key` does
// in cosign v3 (with --tlog-upload=false: no log entry).
func KeyBundle(t testing.TB, ref name.Digest, k *Key, predicateType string) []byte {
	t.Helper()
	statement := inTotoStatement(t, ref, predicateType)
	const payloadType = "application/vnd.in-toto+json"
	// DSSE signs the pre-authentication encoding of type and payload.
	pae := fmt.Sprintf("DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(statement), statement)
	pb := &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: "release-key"}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: statement, PayloadType: payloadType,
			Signatures: []*protodsse.Signature{{Sig: k.SignPayload(t, []byte(pae))}},
		}},
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		t.Fatalf("bundle: %v", err)
	}
	out, err := b.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// inTotoStatement is cosign's statement about ref.
func inTotoStatement(t testing.TB, ref name.Digest, predicateType string) []byte {
	t.Helper()
	statement, err := json.Marshal(map[string]any{
		"_type": "https://in-toto.io/Statement/v1",
		"subject": []map[string]any{{
			"name":   ref.Context().Name(),
			"digest": map[string]string{"sha256": strings.TrimPrefix(ref.DigestStr(), "sha256:")},
		}},
		"predicateType": predicateType,
		"predicate":     map[string]any{},
	})
	if err != nil {
		t.Fatal(err)
	}
	return statement
}
