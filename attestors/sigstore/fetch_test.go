package sigstore_test

import (
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
	"github.com/nhid/nhid/pkg/clock"
)

var signedSelectors = []string{"sigstore:signed_by:k", "sigstore:verified:true"}

func TestSelectors_CachesByDigestUntilTTL(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	key := sigstoretest.NewKey(t)
	ref := sigstoretest.PushRandom(t, reg.Host+"/team/app:v1")
	unsigned := sigstoretest.PushRandom(t, reg.Host+"/team/app:v2")
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	v := newVerifier(t, sigstore.Config{Clock: clk, CacheTTL: time.Minute, PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}})

	if got := selectors(t, v, ref); len(got) != 0 {
		t.Fatalf("before signing: %v, want none", got)
	}
	sigstoretest.Sign(t, ref, key)
	before := reg.Requests()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if got := selectors(t, v, ref); len(got) != 0 {
				t.Errorf("within the TTL of an unsigned result: %v, want none", got)
			}
		})
	}
	wg.Wait()
	if n := reg.Requests() - before; n != 0 {
		t.Errorf("%d registry requests within the TTL, want 0", n)
	}
	clk.Add(time.Minute)
	if diff := cmp.Diff(signedSelectors, selectors(t, v, ref)); diff != "" {
		t.Errorf("after the TTL (-want +got):\n%s", diff)
	}
	// Other digests are cached apart.
	if got := selectors(t, v, unsigned); len(got) != 0 {
		t.Errorf("unsigned image: %v, want none", got)
	}
}

func TestSelectors_RegistryFailureIsAnErrorAndNotCached(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	key := sigstoretest.NewKey(t)
	ref := sigstoretest.PushRandom(t, reg.Host+"/team/app:v1")
	sigstoretest.Sign(t, ref, key)
	v := newVerifier(t, sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}})

	reg.SetFailing(true)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if sels, err := v.Selectors(ctx, ref.String()); err == nil {
		t.Fatalf("Selectors with the registry down = %v, nil; want an error", sels)
	}
	reg.SetFailing(false)
	if diff := cmp.Diff(signedSelectors, selectors(t, v, ref)); diff != "" {
		t.Errorf("once the registry is back (-want +got):\n%s", diff)
	}
}

// hostIP returns a non-loopback IPv4 address of this machine.
func hostIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no non-loopback IPv4 address to serve a non-loopback registry on")
	}
	t.Skip("no non-loopback IPv4 address to serve a non-loopback registry on")
	return ""
}

func TestSelectors_PlainHTTPOnlyForLoopbackAndInsecureRegistries(t *testing.T) {
	reg := sigstoretest.StartRegistryOn(t, hostIP(t))
	key := sigstoretest.NewKey(t)
	// Pushing in the test goes over plain HTTP on purpose.
	ref := sigstoretest.PushRandom(t, reg.Host+"/team/app:v1")
	sigstoretest.Sign(t, ref, key)
	keys := []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}

	strict := newVerifier(t, sigstore.Config{PublicKeys: keys})
	if sels, err := strict.Selectors(context.Background(), ref.String()); err == nil {
		t.Errorf("a non-loopback registry over plain HTTP without insecure_registries: %v, nil; want an error", sels)
	}
	allowed := newVerifier(t, sigstore.Config{PublicKeys: keys, InsecureRegistries: []string{reg.Host}})
	if diff := cmp.Diff(signedSelectors, selectors(t, allowed, ref)); diff != "" {
		t.Errorf("with the registry in insecure_registries (-want +got):\n%s", diff)
	}
}

func TestSelectors_FromOCILayout(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	key := sigstoretest.NewKey(t)
	ss := sigstoretest.NewSigstore(t)
	const issuer, subject = "https://issuer.example.com", "release@example.com"
	ref := sigstoretest.PushRandom(t, reg.Host+"/team/app:v1")
	sigstoretest.Sign(t, ref, key)
	sigstoretest.AttachBundle(t, ref, ss.Bundle(t, ref, subject, issuer, sigstoretest.SignPredicateType))
	unsigned := sigstoretest.PushRandom(t, reg.Host+"/team/app:v2")

	// Copy the signatures into a layout, as an air-gapped node would get
	// them, and take the registry away.
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	tag := sigstoretest.SignatureTag(ref)
	if err := p.AppendImage(sigstoretest.SignatureImage(t, ref), layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		t.Fatal(err)
	}
	referrers, err := remote.Referrers(ref)
	if err != nil {
		t.Fatal(err)
	}
	im, err := referrers.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("referrers: %v, %d", err, len(im.Manifests))
	}
	bundleImg, err := remote.Image(ref.Context().Digest(im.Manifests[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(bundleImg); err != nil {
		t.Fatal(err)
	}
	reg.SetFailing(true)

	v := newVerifier(t, sigstore.Config{
		OCILayout:   dir,
		PublicKeys:  []sigstore.PublicKey{{Name: "k", PEM: key.PEM}},
		TrustedRoot: ss.TrustedRoot(t),
		Identities:  []sigstore.Identity{{Subject: subject, Issuer: issuer}},
		SkipSCT:     true,
	})
	want := []string{"sigstore:issuer:" + issuer, "sigstore:signed_by:k", "sigstore:subject:" + subject, "sigstore:verified:true"}
	if diff := cmp.Diff(want, selectors(t, v, ref)); diff != "" {
		t.Errorf("signed image (-want +got):\n%s", diff)
	}
	if got := selectors(t, v, unsigned); len(got) != 0 {
		t.Errorf("unsigned image: %v, want none", got)
	}
	if !strings.HasPrefix(tag.TagStr(), "sha256-") {
		t.Errorf("signature tag %q does not follow cosign's scheme", tag.TagStr())
	}
}
