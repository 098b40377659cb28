package tpm

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/nhid/nhid/attestors/tpm/tpmtest"
	"github.com/nhid/nhid/pkg/attestor"
)

// tamper answers challenges with ev, then lets mutate change the answer
// before it reaches the verifier, as a hostile agent could.
func tamper(t testing.TB, ev *Evidence, mutate func(r *response)) attestor.Challenger {
	return func(ctx context.Context, raw []byte) ([]byte, error) {
		answer, err := ev.Respond(ctx, raw)
		if err != nil {
			return nil, err
		}
		r, err := decodeResponse(answer)
		if err != nil {
			t.Errorf("the agent's own answer does not decode: %v", err)
			return nil, err
		}
		mutate(r)
		return encode(r), nil
	}
}

// record answers with ev and keeps each answer.
func record(ev *Evidence, answers *[][]byte) attestor.Challenger {
	return func(ctx context.Context, raw []byte) ([]byte, error) {
		answer, err := ev.Respond(ctx, raw)
		*answers = append(*answers, answer)
		return answer, err
	}
}

func attestWith(t testing.TB, f *fixture, ev *Evidence, respond attestor.Challenger) (attestor.NodeResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	payload, err := ev.Evidence(ctx)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	return f.v.Attest(ctx, payload, respond)
}

// checkRefused requires a refusal of class (and, if set, detail) that was
// logged with its reason.
func checkRefused(t *testing.T, f *fixture, err, class, detail error) {
	t.Helper()
	if !errors.Is(err, attestor.ErrAttestationFailed) || !errors.Is(err, class) {
		t.Fatalf("err = %v, want a refusal: %v", err, class)
	}
	if detail != nil && !errors.Is(err, detail) {
		t.Fatalf("err = %v, want the detail: %v", err, detail)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "tpm attestation refused") || !strings.Contains(logs, class.Error()) {
		t.Errorf("no refusal logged with reason %q:\n%s", class, logs)
	}
}

func TestAttest_RefusesEKCertificateFromUnknownCA(t *testing.T) {
	f := newFixture(t, nil)
	stranger := tpmtest.Start(t, tpmtest.NewCA(t, "someone else's EK CA"))
	_, err := f.attest(t, newEvidence(t, stranger, AKECP256))
	checkRefused(t, f, err, errEKUntrusted, nil)
	if !strings.Contains(err.Error(), "not issued by a CA in ek_ca_files") {
		t.Errorf("err = %v, want it to say the issuer is unknown", err)
	}
	if !strings.Contains(f.logs.String(), "ek_pubhash="+stranger.EKHash(t)) {
		t.Errorf("the refusal log does not name the EK:\n%s", f.logs)
	}
}

func TestAttest_RefusesTPMWithoutCertificateOrAllowListEntry(t *testing.T) {
	f := newFixture(t, nil)
	bare := tpmtest.Start(t, nil)
	_, err := f.attest(t, newEvidence(t, bare, AKECP256))
	checkRefused(t, f, err, errEKUntrusted, nil)
}

func TestAttest_RefusesReplayedActivationResponse(t *testing.T) {
	f := newFixture(t, nil)
	ev := f.evidence(t, AKECP256)
	var answers [][]byte
	if _, err := attestWith(t, f, ev, record(ev, &answers)); err != nil {
		t.Fatalf("first attestation: %v", err)
	}
	replay := func(context.Context, []byte) ([]byte, error) { return answers[0], nil }
	_, err := attestWith(t, f, ev, replay)
	checkRefused(t, f, err, errActivation, nil)
}

func TestAttest_RefusesStaleQuoteUnderFreshActivation(t *testing.T) {
	f := newFixture(t, nil)
	ev := f.evidence(t, AKECP256)
	var answers [][]byte
	if _, err := attestWith(t, f, ev, record(ev, &answers)); err != nil {
		t.Fatalf("first attestation: %v", err)
	}
	old, err := decodeResponse(answers[0])
	if err != nil {
		t.Fatal(err)
	}
	// The secret is activated afresh; the quote is the earlier one, over
	// the earlier nonce.
	_, err = attestWith(t, f, ev, tamper(t, ev, func(r *response) {
		r.Quote, r.Signature, r.PCRs = old.Quote, old.Signature, old.PCRs
	}))
	checkRefused(t, f, err, errQuote, errQuoteNonce)
}

func TestAttest_RefusesTamperedQuotes(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(r *response)
		detail error
	}{
		{"PCR value changed", func(r *response) { r.PCRs[0].Digest[0] ^= 1 }, errPCRDigest},
		{"PCR value missing", func(r *response) { r.PCRs = r.PCRs[1:] }, nil},
		{"quote byte flipped", func(r *response) { r.Quote[len(r.Quote)-1] ^= 1 }, errQuoteSignature},
		{"signature byte flipped", func(r *response) { r.Signature[len(r.Signature)-1] ^= 1 }, errQuoteSignature},
		{"magic changed", func(r *response) { r.Quote[0] = 0 }, errQuoteMagic},
		{"not a quote", func(r *response) { r.Quote[5] = 0x17 }, errQuoteType},
	}
	f := newFixture(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := f.evidence(t, AKRSA2048)
			_, err := attestWith(t, f, ev, tamper(t, ev, tt.mutate))
			checkRefused(t, f, err, errQuote, tt.detail)
		})
	}
}

func TestAttest_RefusesQuoteOfOtherPCRs(t *testing.T) {
	f := newFixture(t, nil)
	ev := f.evidence(t, AKECP256)
	fewer := func(ctx context.Context, raw []byte) ([]byte, error) {
		c, err := decodeChallenge(raw)
		if err != nil {
			return nil, err
		}
		c.PCRs = c.PCRs[:len(c.PCRs)-1]
		return ev.Respond(ctx, encode(c))
	}
	_, err := attestWith(t, f, ev, fewer)
	checkRefused(t, f, err, errQuote, errQuoteSelection)
}

func TestAttest_RefusesUnrestrictedAK(t *testing.T) {
	f := newFixture(t, nil)
	ev := f.evidence(t, AKECP256)
	// A TPM will quote with an unrestricted signing key, but such a key
	// also signs anything it is given, forged quotes included.
	ev.template.ObjectAttributes.Restricted = false
	_, err := f.attest(t, ev)
	checkRefused(t, f, err, errAK, nil)
	if !strings.Contains(err.Error(), "not restricted") {
		t.Errorf("err = %v, want it to name the missing attribute", err)
	}
}

func TestAttest_RefusesValuesOutsideEveryGoldenSet(t *testing.T) {
	f := newFixture(t, func(cfg *VerifierConfig) {
		cfg.PCRPolicies = []PCRPolicy{{Name: "expected", PCRs: map[int][]string{7: {strings.Repeat("ab", 32)}}}}
	})
	_, err := f.attest(t, f.evidence(t, AKECP256))
	checkRefused(t, f, err, errPCRPolicy, nil)
	if !strings.Contains(err.Error(), "match no pcr_policy (expected)") {
		t.Errorf("err = %v, want it to name the golden sets", err)
	}
}

func TestAttest_ChallengeFailureIsNotAVerdict(t *testing.T) {
	f := newFixture(t, nil)
	ev := f.evidence(t, AKECP256)
	lost := errors.New("stream broken")
	_, err := attestWith(t, f, ev, func(context.Context, []byte) ([]byte, error) { return nil, lost })
	if !errors.Is(err, lost) || errors.Is(err, attestor.ErrAttestationFailed) {
		t.Fatalf("err = %v, want the transport error, not a refusal", err)
	}
}

func TestAttest_RevokedCAIsRefusedAtRequote(t *testing.T) {
	f := newFixture(t, nil)
	ev := f.evidence(t, AKECP256)
	res := f.mustAttest(t, ev)
	// The operator replaces the EK CA: the node's certificate no longer
	// chains, and the next requote says so.
	replacement := tpmtest.NewCA(t, "replacement").Cert
	f.rebuild(t, func(cfg *VerifierConfig) { cfg.EKCAs = []*x509.Certificate{replacement} })
	_, err := f.reattest(t, res, ev.Respond)
	checkRefused(t, f, err, errEKUntrusted, nil)
}
