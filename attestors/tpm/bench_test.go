package tpm

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/nhid/nhid/attestors/tpm/tpmtest"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
)

// BenchmarkAttest is the full attestation round trip against swtpm: the
// agent reads the EK and its certificate and creates the AK; the server
// checks them and makes the credential; the agent activates it and quotes
// PCRs 0-7; the server verifies it all.
func BenchmarkAttest(b *testing.B) {
	tpmtest.Require(b)
	ca := tpmtest.NewCA(b, "nhid bench EK CA")
	tp := tpmtest.Start(b, ca)
	for _, ak := range []AKType{AKECP256, AKRSA2048} {
		b.Run(string(ak), func(b *testing.B) {
			f := &fixture{ca: ca, tpm: tp, v: benchVerifier(b, ca)}
			ev := newEvidence(b, tp, ak)
			ctx := context.Background()
			for b.Loop() {
				if _, err := attestortest.Drive(ctx, f.v, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReattest is one continuous attestation round against swtpm.
func BenchmarkReattest(b *testing.B) {
	tpmtest.Require(b)
	ca := tpmtest.NewCA(b, "nhid bench EK CA")
	tp := tpmtest.Start(b, ca)
	for _, ak := range []AKType{AKECP256, AKRSA2048} {
		b.Run(string(ak), func(b *testing.B) {
			f := &fixture{ca: ca, tpm: tp, v: benchVerifier(b, ca)}
			ev := newEvidence(b, tp, ak)
			res := f.mustAttest(b, ev)
			for b.Loop() {
				if _, err := f.reattest(b, res, ev.Respond); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyQuote is the server's cost of checking one quote of PCRs
// 0-7 (signature, structure, nonce, selection, digest) and holding the
// values to a golden set, without the TPM.
func BenchmarkVerifyQuote(b *testing.B) {
	tpmtest.Require(b)
	ca := tpmtest.NewCA(b, "nhid bench EK CA")
	tp := tpmtest.Start(b, ca)
	for _, ak := range []AKType{AKECP256, AKRSA2048} {
		b.Run(string(ak), func(b *testing.B) {
			v := benchVerifier(b, ca)
			golden := PCRPolicy{Name: "bench", PCRs: map[int][]string{7: {hexOf(tp.PCR(b, 7))}}}
			p, err := newPolicy(nil, []PCRPolicy{golden})
			if err != nil {
				b.Fatal(err)
			}
			ev := newEvidence(b, tp, ak)
			ctx := context.Background()
			payload, err := ev.Evidence(ctx)
			if err != nil {
				b.Fatal(err)
			}
			e, _ := decodeEvidence(payload)
			akKey, err := checkAK(e.AKPublic)
			if err != nil {
				b.Fatal(err)
			}
			nonce := random(nonceSize)
			raw, err := ev.Respond(ctx, encode(challengeFor(nonce, v.policy.selection, akKey)))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				r, err := decodeResponse(raw)
				if err != nil {
					b.Fatal(err)
				}
				values, err := verifyQuote(akKey, nonce, p.selection, r)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.evaluate(values, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchVerifier(b *testing.B, ca *tpmtest.CA) *Verifier {
	b.Helper()
	return newVerifier(b, VerifierConfig{TrustDomain: testTD, EKCAs: []*x509.Certificate{ca.Cert}, Log: discardLog()})
}
