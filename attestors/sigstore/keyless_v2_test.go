package sigstore_test

import (
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
)

const (
	v2Issuer  = "https://token.actions.githubusercontent.com"
	v2Subject = "https://github.com/nhid/app/.github/workflows/release.yml@refs/heads/main"
	botIssuer = "https://accounts.google.com"
	botEmail  = "release-bot@nhid.example"
)

var (
	ciLeaf    = sigstoretest.LeafOptions{Subject: v2Subject, Issuer: v2Issuer}
	v2Signed  = []string{"sigstore:issuer:" + v2Issuer, "sigstore:subject:" + v2Subject, "sigstore:verified:true"}
	v2Refused = "cosign v2 keyless signature"
)

func v2Config(ss *sigstoretest.FakeSigstore, t *testing.T, logs *syncBuffer) sigstore.Config {
	t.Helper()
	return sigstore.Config{
		Log:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TrustedRoot: ss.TrustedRoot(t),
		Identities: []sigstore.Identity{
			{SubjectRegexp: `https://github\.com/nhid/.*`, Issuer: v2Issuer},
			{Subject: botEmail, Issuer: botIssuer},
		},
		SkipSCT: true,
	}
}

// refusals counts the log lines giving a reason to refuse a signature.
func refusals(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, v2Refused) || strings.Contains(l, "refusing a validly signed payload") {
			out = append(out, l)
		}
	}
	return out
}

func TestSelectors_CosignV2Keyless(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	ss, other := sigstoretest.NewFakeSigstore(t), sigstoretest.NewFakeSigstore(t)
	now := time.Now()

	tests := []struct {
		name string
		// sign makes the signature of ref (pushed for the case); another
		// is an image of the same repository, another an image elsewhere.
		sign   func(t *testing.T, ref, another, elsewhere name.Digest) sigstoretest.V2Signature
		want   []string
		reason string
	}{
		{"signed by an accepted identity", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, _ := ss.SignV2(t, ref, ciLeaf)
			return sig
		}, v2Signed, ""},
		{"issuer in the deprecated extension", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, _ := ss.SignV2(t, ref, sigstoretest.LeafOptions{Subject: botEmail, Issuer: botIssuer, LegacyIssuerOID: true})
			return sig
		}, []string{"sigstore:issuer:" + botIssuer, "sigstore:subject:" + botEmail, "sigstore:verified:true"}, ""},
		{"another identity", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, _ := ss.SignV2(t, ref, sigstoretest.LeafOptions{Subject: "https://github.com/mallory/app/.github/workflows/x.yml@refs/heads/main", Issuer: v2Issuer})
			return sig
		}, nil, "no matching CertificateIdentity"},
		{"accepted subject from another issuer", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, _ := ss.SignV2(t, ref, sigstoretest.LeafOptions{Subject: v2Subject, Issuer: "https://token.evil.example"})
			return sig
		}, nil, "no matching CertificateIdentity"},
		{"certificate expired at the integrated time", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, _ := ss.SignV2(t, ref, sigstoretest.LeafOptions{Subject: v2Subject, Issuer: v2Issuer,
				NotBefore: now.Add(-20 * time.Minute), NotAfter: now.Add(-10 * time.Minute)})
			return sig
		}, nil, "integrated time outside certificate validity"},
		{"SET signed by another key", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, _ := ss.SignV2(t, ref, ciLeaf)
			sig.Entry.SET = other.SignSET(t, *sig.Entry)
			return sig
		}, nil, "unable to verify SET"},
		{"SET of another entry", func(t *testing.T, ref, another, _ name.Digest) sigstoretest.V2Signature {
			sig, _ := ss.SignV2(t, ref, ciLeaf)
			theirs, _ := ss.SignV2(t, another, ciLeaf)
			sig.Entry.Body = theirs.Entry.Body
			return sig
		}, nil, "unable to verify SET"},
		{"entry in a log the trusted root does not know", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			return sigstoretest.NewV2Signature(t, ss.Leaf(t, ciLeaf), sigstoretest.Payload(t, ref), other, now)
		}, nil, "rekor log public key not found"},
		{"entry naming another signature", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, leaf := ss.SignV2(t, ref, ciLeaf)
			// ECDSA signatures are randomized: the same key signs the same
			// payload differently.
			e := ss.Log(t, sigstoretest.HashedRekord(t, sig.Payload, leaf.Sign(t, sig.Payload), leaf.PEM), now)
			sig.Entry = &e
			return sig
		}, nil, "transparency log signature does not match"},
		{"entry naming another certificate of the same key", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, leaf := ss.SignV2(t, ref, ciLeaf)
			e := ss.Log(t, sigstoretest.HashedRekord(t, sig.Payload, sig.Signature, ss.ReissueLeaf(t, leaf, ciLeaf).PEM), now)
			sig.Entry = &e
			return sig
		}, nil, "transparency log certificate does not match"},
		{"signature and entry of another payload", func(t *testing.T, ref, another, _ name.Digest) sigstoretest.V2Signature {
			sig := sigstoretest.NewV2Signature(t, ss.Leaf(t, ciLeaf), sigstoretest.Payload(t, another), ss, now)
			sig.Payload = sigstoretest.Payload(t, ref)
			return sig
		}, nil, "does not match artifact"},
		{"payload naming another image", func(t *testing.T, _, another, _ name.Digest) sigstoretest.V2Signature {
			return sigstoretest.NewV2Signature(t, ss.Leaf(t, ciLeaf), sigstoretest.Payload(t, another), ss, now)
		}, nil, "payload signs digest"},
		{"payload naming another repository", func(t *testing.T, ref, _, elsewhere name.Digest) sigstoretest.V2Signature {
			payload := sigstoretest.PayloadFor(t, elsewhere.Context().Name(), ref.DigestStr())
			return sigstoretest.NewV2Signature(t, ss.Leaf(t, ciLeaf), payload, ss, now)
		}, nil, "payload signs repository"},
		{"chain annotation of another CA", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, _ := ss.SignV2(t, ref, ciLeaf)
			sig.Chain = other.Leaf(t, ciLeaf).Chain
			return sig
		}, nil, "did not issue"},
		{"certificate of an untrusted CA with its own chain", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			return sigstoretest.NewV2Signature(t, other.Leaf(t, ciLeaf), sigstoretest.Payload(t, ref), ss, now)
		}, nil, "leaf certificate verification failed"},
		{"no Rekor bundle", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, _ := ss.SignV2(t, ref, ciLeaf)
			sig.Entry = nil
			return sig
		}, nil, "no dev.sigstore.cosign/bundle annotation"},
		{"rekord entry", func(t *testing.T, ref, _, _ name.Digest) sigstoretest.V2Signature {
			sig, leaf := ss.SignV2(t, ref, ciLeaf)
			e := ss.Log(t, rekordBody(t, sig.Payload, sig.Signature, leaf.PEM), now)
			sig.Entry = &e
			return sig
		}, nil, "only hashedrekord entries"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tag := reg.Host + "/team/app:case" + string(rune('a'+i))
			ref := sigstoretest.PushRandom(t, tag)
			another := sigstoretest.PushRandom(t, tag+"-another")
			elsewhere := sigstoretest.PushRandom(t, reg.Host+"/team/other:case"+string(rune('a'+i)))
			sigstoretest.AttachV2(t, ref, tt.sign(t, ref, another, elsewhere))

			var logs syncBuffer
			v := newVerifier(t, v2Config(ss, t, &logs))
			if diff := cmp.Diff(tt.want, selectors(t, v, ref)); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
			lines := refusals(logs.String())
			switch {
			case tt.reason == "" && len(lines) != 0:
				t.Errorf("an accepted signature logged refusals:\n%s", strings.Join(lines, "\n"))
			case tt.reason != "" && (len(lines) != 1 || !strings.Contains(lines[0], tt.reason)):
				t.Errorf("want one refusal saying %q, got:\n%s", tt.reason, logs.String())
			}
			// The result is cached as it is: asking again neither reaches
			// the registry nor logs again, and gives the same answer.
			before, logged := reg.Requests(), logs.String()
			if diff := cmp.Diff(tt.want, selectors(t, v, ref)); diff != "" {
				t.Errorf("cached selectors (-want +got):\n%s", diff)
			}
			if n := reg.Requests() - before; n != 0 || logs.String() != logged {
				t.Errorf("asking again: %d registry requests, new logs %q; want a cached answer", n, strings.TrimPrefix(logs.String(), logged))
			}
		})
	}
}

// rekordBody is a Rekor rekord v0.0.1 entry body, the kind early cosign
// releases logged.
func rekordBody(t *testing.T, payload, sig, certPEM []byte) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"apiVersion": "0.0.1",
		"kind":       "rekord",
		"spec": map[string]any{
			"data": map[string]any{"content": base64.StdEncoding.EncodeToString(payload)},
			"signature": map[string]any{
				"format":    "x509",
				"content":   base64.StdEncoding.EncodeToString(sig),
				"publicKey": map[string]string{"content": base64.StdEncoding.EncodeToString(certPEM)},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSelectors_CosignV2KeylessSCT(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	ss := sigstoretest.NewFakeSigstore(t)
	withSCT := sigstoretest.PushRandom(t, reg.Host+"/team/app:sct")
	sig, _ := ss.SignV2(t, withSCT, sigstoretest.LeafOptions{Subject: v2Subject, Issuer: v2Issuer, SCT: true})
	sigstoretest.AttachV2(t, withSCT, sig)
	withoutSCT := sigstoretest.PushRandom(t, reg.Host+"/team/app:nosct")
	sig, _ = ss.SignV2(t, withoutSCT, ciLeaf)
	sigstoretest.AttachV2(t, withoutSCT, sig)
	unknownLog := sigstoretest.PushRandom(t, reg.Host+"/team/app:othersct")
	sig, _ = ss.SignV2(t, unknownLog, sigstoretest.LeafOptions{Subject: v2Subject, Issuer: v2Issuer, SCT: true, SCTLog: sigstoretest.NewFakeSigstore(t)})
	sigstoretest.AttachV2(t, unknownLog, sig)

	var logs syncBuffer
	cfg := v2Config(ss, t, &logs)
	cfg.SkipSCT = false
	v := newVerifier(t, cfg)
	if diff := cmp.Diff(v2Signed, selectors(t, v, withSCT)); diff != "" {
		t.Errorf("certificate with an SCT of the trusted CT log (-want +got):\n%s", diff)
	}
	for _, ref := range []name.Digest{withoutSCT, unknownLog} {
		if got := selectors(t, v, ref); len(got) != 0 {
			t.Errorf("%s: %v, want none", ref, got)
		}
	}
	if n := strings.Count(logs.String(), "failed to verify signed certificate timestamp"); n != 2 {
		t.Errorf("want two refusals for the SCT, got %d:\n%s", n, logs.String())
	}
	cfg.SkipSCT = true
	if diff := cmp.Diff(v2Signed, selectors(t, newVerifier(t, cfg), withoutSCT)); diff != "" {
		t.Errorf("without an SCT but with skip_sct (-want +got):\n%s", diff)
	}
}

func TestSelectors_CosignV2KeylessNextToOtherSignatures(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	ss, other := sigstoretest.NewFakeSigstore(t), sigstoretest.NewFakeSigstore(t)
	key := sigstoretest.NewKey(t)
	ref := sigstoretest.PushRandom(t, reg.Host+"/team/app:v1")
	forged, _ := ss.SignV2(t, ref, sigstoretest.LeafOptions{Subject: "https://github.com/nhid/evil/.github/workflows/x.yml@refs/heads/main", Issuer: v2Issuer})
	forged.Entry.SET = other.SignSET(t, *forged.Entry)
	sigstoretest.AttachV2(t, ref, forged)
	sigstoretest.Sign(t, ref, key)
	good, _ := ss.SignV2(t, ref, ciLeaf)
	sigstoretest.AttachV2(t, ref, good)

	var logs syncBuffer
	cfg := v2Config(ss, t, &logs)
	cfg.PublicKeys = []sigstore.PublicKey{{Name: "release", PEM: key.PEM}}
	want := []string{"sigstore:issuer:" + v2Issuer, "sigstore:signed_by:release", "sigstore:subject:" + v2Subject, "sigstore:verified:true"}
	if diff := cmp.Diff(want, selectors(t, newVerifier(t, cfg), ref)); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
	if lines := refusals(logs.String()); len(lines) != 1 || !strings.Contains(lines[0], "unable to verify SET") {
		t.Errorf("want one refusal, of the forged signature:\n%s", logs.String())
	}
}

func TestSelectors_CosignV2KeylessTrustedRootValidity(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	ss := sigstoretest.NewFakeSigstore(t)
	ref := sigstoretest.PushRandom(t, reg.Host+"/team/app:v1")
	sig, _ := ss.SignV2(t, ref, ciLeaf)
	sigstoretest.AttachV2(t, ref, sig)
	retired := time.Now().Add(-time.Hour)

	tests := []struct {
		name   string
		retire func()
		reason string
	}{
		{"Fulcio CA retired before the integrated time", func() { ss.FulcioValidUntil = retired }, "leaf certificate verification failed"},
		{"Rekor log key retired before the integrated time", func() { ss.RekorValidUntil = retired }, "rekor log public key not valid at payload integrated time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss.FulcioValidUntil, ss.RekorValidUntil = time.Time{}, time.Time{}
			tt.retire()
			var logs syncBuffer
			if got := selectors(t, newVerifier(t, v2Config(ss, t, &logs)), ref); len(got) != 0 {
				t.Errorf("selectors %v, want none", got)
			}
			if lines := refusals(logs.String()); len(lines) != 1 || !strings.Contains(lines[0], tt.reason) {
				t.Errorf("want one refusal saying %q, got:\n%s", tt.reason, logs.String())
			}
		})
	}
}

func TestSelectors_CosignV2KeylessFromOCILayout(t *testing.T) {
	reg := sigstoretest.StartRegistry(t)
	ss := sigstoretest.NewFakeSigstore(t)
	ref := sigstoretest.PushRandom(t, reg.Host+"/team/app:v1")
	sig, _ := ss.SignV2(t, ref, ciLeaf)
	sigstoretest.AttachV2(t, ref, sig)

	// An air-gapped node gets the .sig image in a layout and reaches
	// neither the registry nor Sigstore.
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(sigstoretest.SignatureImage(t, ref), layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": sigstoretest.SignatureTag(ref).TagStr(),
	})); err != nil {
		t.Fatal(err)
	}
	reg.SetFailing(true)

	var logs syncBuffer
	cfg := v2Config(ss, t, &logs)
	cfg.OCILayout = dir
	if diff := cmp.Diff(v2Signed, selectors(t, newVerifier(t, cfg), ref)); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
}
