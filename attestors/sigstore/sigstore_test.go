package sigstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.uber.org/goleak"

	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
	"github.com/nhid/nhid/pkg/selector"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sleeperDir != "" {
		os.RemoveAll(sleeperDir)
	}
	if code == 0 {
		// net/http keeps idle registry connections; containerd's dialer
		// polls for a socket until its timeout. Neither is a leak.
		if err := goleak.Find(
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const waitTimeout = 10 * time.Second

// syncBuffer is a log sink safe for the verifier's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newVerifier(t testing.TB, cfg sigstore.Config) *sigstore.Verifier {
	t.Helper()
	v, err := sigstore.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

func selectors(t testing.TB, v *sigstore.Verifier, ref name.Digest) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sels, err := v.Selectors(ctx, ref.String())
	if err != nil {
		t.Fatalf("Selectors(%s): %v", ref, err)
	}
	return selector.NewSet(sels...).Strings()
}

func TestSelectors_KeySignedImage(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	prod, ci, other := sigstoretest.NewKey(t), sigstoretest.NewKey(t), sigstoretest.NewKey(t)
	signedByBoth := sigstoretest.PushRandom(t, reg.Host+"/team/app:v1")
	sigstoretest.Sign(t, signedByBoth, prod)
	sigstoretest.Sign(t, signedByBoth, ci)
	signedByProd := sigstoretest.PushRandom(t, reg.Host+"/team/app:v2")
	sigstoretest.Sign(t, signedByProd, prod)
	wrongKey := sigstoretest.PushRandom(t, reg.Host+"/team/app:v3")
	sigstoretest.Sign(t, wrongKey, other)
	unsigned := sigstoretest.PushRandom(t, reg.Host+"/team/app:v4")

	v := newVerifier(t, sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "prod", PEM: prod.PEM}, {Name: "ci", PEM: ci.PEM}}})
	tests := []struct {
		name string
		ref  name.Digest
		want []string
	}{
		{"signed by two keys", signedByBoth, []string{"sigstore:signed_by:ci", "sigstore:signed_by:prod", "sigstore:verified:true"}},
		{"signed by one key", signedByProd, []string{"sigstore:signed_by:prod", "sigstore:verified:true"}},
		{"signed by an unknown key", wrongKey, nil},
		{"unsigned", unsigned, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, selectors(t, v, tt.ref)); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSelectors_RefusesSignaturesOfAnotherImage(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	key := sigstoretest.NewKey(t)
	signed := sigstoretest.PushRandom(t, reg.Host+"/team/app:good")
	sigstoretest.Sign(t, signed, key)
	victim := sigstoretest.PushRandom(t, reg.Host+"/team/app:evil")
	otherRepo := sigstoretest.PushRandom(t, reg.Host+"/team/other:v1")

	// A valid signature image copied onto another digest's tag.
	if err := remote.Write(sigstoretest.SignatureTag(victim), sigstoretest.SignatureImage(t, signed)); err != nil {
		t.Fatal(err)
	}
	// A signature naming the right digest but another repository, made
	// by the trusted key (a payload signed for team/app, replayed in
	// team/other).
	wrongRepo := sigstoretest.PayloadFor(t, signed.Context().Name(), otherRepo.DigestStr())
	sigstoretest.Attach(t, otherRepo, wrongRepo, key.SignPayload(t, wrongRepo))

	var logs syncBuffer
	v := newVerifier(t, sigstore.Config{
		Log:        slog.New(slog.NewTextHandler(&logs, nil)),
		PublicKeys: []sigstore.PublicKey{{Name: "release", PEM: key.PEM}},
	})
	for _, ref := range []name.Digest{victim, otherRepo} {
		if got := selectors(t, v, ref); len(got) != 0 {
			t.Errorf("%s got %v from a signature made for another image, want none", ref, got)
		}
	}
	for _, want := range []string{"payload signs digest", victim.DigestStr(), "payload signs repository"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not say why (%q):\n%s", want, logs.String())
		}
	}
	if diff := cmp.Diff([]string{"sigstore:signed_by:release", "sigstore:verified:true"}, selectors(t, v, signed)); diff != "" {
		t.Errorf("the genuinely signed image (-want +got):\n%s", diff)
	}
}

func TestSelectors_KeylessBundle(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	ss := sigstoretest.NewSigstore(t)
	const (
		issuer = "https://token.actions.githubusercontent.com"
		ci     = "https://github.com/nhid/app/.github/workflows/release.yml@refs/heads/main"
	)
	signed := sigstoretest.PushRandom(t, reg.Host+"/team/app:keyless")
	sigstoretest.AttachBundle(t, signed, ss.Bundle(t, signed, ci, issuer, sigstoretest.SignPredicateType))
	byStranger := sigstoretest.PushRandom(t, reg.Host+"/team/app:stranger")
	sigstoretest.AttachBundle(t, byStranger, ss.Bundle(t, byStranger, "mallory@example.com", "https://accounts.example.com", sigstoretest.SignPredicateType))
	provenanceOnly := sigstoretest.PushRandom(t, reg.Host+"/team/app:provenance")
	sigstoretest.AttachBundle(t, provenanceOnly, ss.Bundle(t, provenanceOnly, ci, issuer, sigstoretest.ProvenancePredicateType))
	otherDigest := sigstoretest.PushRandom(t, reg.Host+"/team/app:copied")
	// The bundle of one image attached to another: its statement names
	// the first image's digest.
	sigstoretest.AttachBundle(t, otherDigest, ss.Bundle(t, signed, ci, issuer, sigstoretest.SignPredicateType))
	untrusted := sigstoretest.NewSigstore(t)
	fromOtherCA := sigstoretest.PushRandom(t, reg.Host+"/team/app:otherca")
	sigstoretest.AttachBundle(t, fromOtherCA, untrusted.Bundle(t, fromOtherCA, ci, issuer, sigstoretest.SignPredicateType))

	v := newVerifier(t, sigstore.Config{
		TrustedRoot: ss.TrustedRoot(t),
		Identities:  []sigstore.Identity{{SubjectRegexp: `https://github\.com/nhid/.*`, Issuer: issuer}},
		// The virtual Sigstore's certificates carry no CT log timestamps.
		SkipSCT: true,
	})
	tests := []struct {
		name string
		ref  name.Digest
		want []string
	}{
		{"signed by the accepted identity", signed, []string{"sigstore:issuer:" + issuer, "sigstore:subject:" + ci, "sigstore:verified:true"}},
		{"signed by another identity", byStranger, nil},
		{"an attestation is not a signature", provenanceOnly, nil},
		{"a bundle about another digest", otherDigest, nil},
		{"a certificate from another CA", fromOtherCA, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, selectors(t, v, tt.ref)); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
		})
	}
}

func randomID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func TestSelectors_KeySignedBundle(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	release, other := sigstoretest.NewKey(t), sigstoretest.NewKey(t)
	signed := sigstoretest.PushRandom(t, reg.Host+"/team/app:v1")
	sigstoretest.AttachBundle(t, signed, sigstoretest.KeyBundle(t, signed, release, sigstoretest.SignPredicateType))
	byOther := sigstoretest.PushRandom(t, reg.Host+"/team/app:v2")
	sigstoretest.AttachBundle(t, byOther, sigstoretest.KeyBundle(t, byOther, other, sigstoretest.SignPredicateType))
	provenance := sigstoretest.PushRandom(t, reg.Host+"/team/app:v3")
	sigstoretest.AttachBundle(t, provenance, sigstoretest.KeyBundle(t, provenance, release, sigstoretest.ProvenancePredicateType))
	copied := sigstoretest.PushRandom(t, reg.Host+"/team/app:v4")
	sigstoretest.AttachBundle(t, copied, sigstoretest.KeyBundle(t, signed, release, sigstoretest.SignPredicateType))

	v := newVerifier(t, sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "release", PEM: release.PEM}}})
	tests := []struct {
		name string
		ref  name.Digest
		want []string
	}{
		{"signed by the configured key", signed, []string{"sigstore:signed_by:release", "sigstore:verified:true"}},
		{"signed by another key", byOther, nil},
		{"an attestation is not a signature", provenance, nil},
		{"a bundle about another digest", copied, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, selectors(t, v, tt.ref)); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
		})
	}
}
