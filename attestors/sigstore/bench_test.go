package sigstore_test

import (
	"context"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/attestors/container/containerdtest"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
)

// BenchmarkSelectors measures one image's verification with the result
// cached (warm: every attestation after the first within the TTL) and
// without (cold: fetch the signature manifest and payloads or the
// referrers and bundle from a loopback registry, then verify).
func BenchmarkSelectors(b *testing.B) {
	reg := sigstoretest.StartRegistry(b)
	key := sigstoretest.NewKey(b)
	ss := sigstoretest.NewSigstore(b)
	const issuer, subject = "https://issuer.example.com", "release@example.com"
	keyRef := sigstoretest.PushRandom(b, reg.Host+"/team/app:key")
	sigstoretest.Sign(b, keyRef, key)
	keylessRef := sigstoretest.PushRandom(b, reg.Host+"/team/app:keyless")
	sigstoretest.AttachBundle(b, keylessRef, ss.Bundle(b, keylessRef, subject, issuer, sigstoretest.SignPredicateType))

	keyed := newVerifier(b, sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}})
	keyless := newVerifier(b, sigstore.Config{
		TrustedRoot: ss.TrustedRoot(b), SkipSCT: true,
		Identities: []sigstore.Identity{{Subject: subject, Issuer: issuer}},
	})
	cases := []struct {
		name string
		v    *sigstore.Verifier
		ref  name.Digest
	}{{"key", keyed, keyRef}, {"keyless", keyless, keylessRef}}
	for _, c := range cases {
		b.Run(c.name+"/warm_cache", func(b *testing.B) {
			benchSelectors(b, c.v, c.ref, false)
		})
		b.Run(c.name+"/cold_cache", func(b *testing.B) {
			benchSelectors(b, c.v, c.ref, true)
		})
	}
}

func benchSelectors(b *testing.B, v *sigstore.Verifier, ref name.Digest, cold bool) {
	ctx := context.Background()
	if sels, err := v.Selectors(ctx, ref.String()); err != nil || len(sels) == 0 {
		b.Fatalf("Selectors = %v, %v; want selectors", sels, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if cold {
			sigstore.PurgeCache(v)
		}
		if sels, err := v.Selectors(ctx, ref.String()); err != nil || len(sels) == 0 {
			b.Fatalf("Selectors = %v, %v", sels, err)
		}
	}
}

// BenchmarkAttest measures the sigstore workload attestor on a process in
// a real containerd container of a key-signed image: warm (both the
// container lookup and the verification cached) and cold (fresh
// attestors: cgroup parse, containerd look-ups, signature fetch and
// verification; building the attestors is not timed).
func BenchmarkAttest(b *testing.B) {
	d := containerdtest.Start(b)
	reg := sigstoretest.StartRegistry(b)
	key := sigstoretest.NewKey(b)
	bin := sleeperTB(b)
	ref := sigstoretest.Push(b, reg.Host+"/team/app:v1", containerdtest.Image(b, bin, "/bin/sleeper", ""))
	sigstoretest.Sign(b, ref, key)
	c := d.Run(b, d.Pull(b, reg.Host+"/team/app:v1"), randomID(b), containerdtest.RunOptions{})
	keys := []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}
	newAttestor := func(b *testing.B) *sigstore.Attestor {
		ca, err := container.New(container.Config{ContainerdSocket: d.Socket, Namespace: containerdtest.Namespace})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = ca.Close() })
		a, err := sigstore.NewAttestor(sigstore.AttestorConfig{Verifier: newVerifier(b, sigstore.Config{PublicKeys: keys}), Images: ca})
		if err != nil {
			b.Fatal(err)
		}
		return a
	}
	ctx := context.Background()
	attest := func(b *testing.B, a *sigstore.Attestor) {
		if sels, err := a.Attest(ctx, c.PID); err != nil || len(sels) != 2 {
			b.Fatalf("Attest = %v, %v; want 2 selectors", sels, err)
		}
	}
	b.Run("warm_cache", func(b *testing.B) {
		a := newAttestor(b)
		attest(b, a)
		b.ReportAllocs()
		for b.Loop() {
			attest(b, a)
		}
	})
	b.Run("cold_cache", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			b.StopTimer()
			a := newAttestor(b)
			b.StartTimer()
			attest(b, a)
		}
	})
}
