package tpm

import (
	"crypto/x509"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/attestors/tpm/tpmtest"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
)

func TestVerifier_PassesNodeConformance(t *testing.T) {
	f := newFixture(t, nil)
	attestortest.NodeCase{
		Verifier:    f.v,
		NewEvidence: func(t *testing.T) attestor.NodeEvidence { return f.evidence(t, AKECP256) },
		TrustDomain: testTD,
	}.Run(t)
}

func TestAttest_GivesEKIdentityAndMeasuredStateSelectors(t *testing.T) {
	for _, ak := range AKTypes {
		t.Run(string(ak), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			res := f.mustAttest(t, f.evidence(t, ak))

			hash := f.tpm.EKHash(t)
			if want := "spiffe://example.org/nhid/agent/tpm/" + hash; res.AgentID.String() != want {
				t.Errorf("AgentID = %s, want %s", res.AgentID, want)
			}
			want := []string{
				"tpm:ek_pubhash:" + hash,
				"tpm:ek_cert_issuer_cn:nhid test EK CA",
				// swtpm_localca names the EK certificate's subject "unknown".
				"tpm:ek_cert_subject_cn:unknown",
			}
			for _, idx := range DefaultPCRSelection {
				want = append(want, pcrSelector(idx, f.tpm.PCR(t, idx)))
			}
			if diff := cmp.Diff(want, selectorsOf(res.Selectors)); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
			if !res.CanReattest || len(res.State) == 0 {
				t.Errorf("CanReattest = %v, State %d bytes; want true and a state to requote with", res.CanReattest, len(res.State))
			}
		})
	}
}

func TestAttest_MatchingGoldenSetsAreSelectors(t *testing.T) {
	tpmtest.Require(t)
	ca := tpmtest.NewCA(t, "nhid test EK CA")
	tp := tpmtest.Start(t, ca)
	pcr0, pcr7 := hexOf(tp.PCR(t, 0)), hexOf(tp.PCR(t, 7))
	other := hexOf(make([]byte, 31)) + "01"
	v := newVerifier(t, VerifierConfig{
		TrustDomain:  testTD,
		EKCAs:        []*x509.Certificate{ca.Cert},
		PCRSelection: []int{7, 0},
		PCRPolicies: []PCRPolicy{
			{Name: "firmware-2024", PCRs: map[int][]string{0: {other, pcr0}}},
			{Name: "secure-boot", PCRs: map[int][]string{0: {pcr0}, 7: {pcr7}}},
			{Name: "old-firmware", PCRs: map[int][]string{0: {other}}},
		},
	})
	f := &fixture{ca: ca, tpm: tp, v: v}
	res := f.mustAttest(t, newEvidence(t, tp, AKRSA2048))

	var got []string
	for _, s := range selectorsOf(res.Selectors) {
		if s > "tpm:pcr" {
			got = append(got, s)
		}
	}
	want := []string{
		pcrSelector(0, tp.PCR(t, 0)), pcrSelector(7, tp.PCR(t, 7)),
		"tpm:pcr_policy:firmware-2024", "tpm:pcr_policy:secure-boot",
	}
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("PCR selectors (-want +got):\n%s", diff)
	}
}

func TestAttest_AllowListTrustsEKWithoutCertificate(t *testing.T) {
	tpmtest.Require(t)
	tp := tpmtest.Start(t, nil)
	v := newVerifier(t, VerifierConfig{TrustDomain: testTD, EKHashAllowList: []string{tp.EKHash(t)}})
	f := &fixture{tpm: tp, v: v}
	res := f.mustAttest(t, newEvidence(t, tp, AKECP256))
	if hasSelectorPrefix(res.Selectors, "tpm:ek_cert_") {
		t.Errorf("selectors %v name an EK certificate the TPM does not have", res.Selectors)
	}
	if !hasSelectorPrefix(res.Selectors, "tpm:ek_pubhash:"+tp.EKHash(t)) {
		t.Errorf("selectors %v lack the EK hash", res.Selectors)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
