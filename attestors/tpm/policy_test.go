package tpm

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func digest(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestPolicy_Evaluate(t *testing.T) {
	a, b, c := digest(0xaa), digest(0xbb), digest(0xcc)
	sets := []PCRPolicy{
		{Name: "fw-a", PCRs: map[int][]string{0: {hexOf(a)}}},
		{Name: "fw-a-or-b-sb-c", PCRs: map[int][]string{0: {hexOf(a), hexOf(b)}, 7: {hexOf(c)}}},
	}
	tests := []struct {
		name        string
		sets        []PCRPolicy
		values      pcrValues
		pinned      pcrValues
		wantMatched []string
		wantErr     string
	}{
		{"both sets match", sets, pcrValues{0: a, 7: c}, nil, []string{"fw-a", "fw-a-or-b-sb-c"}, ""},
		{"one set matches", sets, pcrValues{0: b, 7: c}, nil, []string{"fw-a-or-b-sb-c"}, ""},
		{"unlisted PCR is free", sets, pcrValues{0: a, 7: b}, nil, []string{"fw-a"}, ""},
		{"no set matches", sets, pcrValues{0: c, 7: c}, nil, nil, "match no pcr_policy (fw-a, fw-a-or-b-sb-c)"},
		{"pinned values are ignored with golden sets", sets, pcrValues{0: a, 7: c}, pcrValues{0: b, 7: b}, []string{"fw-a", "fw-a-or-b-sb-c"}, ""},
		{"no golden sets at attestation accepts anything", nil, pcrValues{0: c, 7: c}, nil, nil, ""},
		{"no golden sets, values as attested", nil, pcrValues{0: a, 7: c}, pcrValues{0: a, 7: c}, nil, ""},
		{"no golden sets, a value changed", nil, pcrValues{0: a, 7: b}, pcrValues{0: a, 7: c}, nil, "PCR 7 changed since the node attested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newPolicy([]int{0, 7}, tt.sets)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.evaluate(tt.values, tt.pinned)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantMatched, got); diff != "" {
				t.Errorf("matched (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewVerifier_ReportsEveryConfigProblem(t *testing.T) {
	ca := newIssuer(t, "ek ca", nil).cert
	leaf := &x509.Certificate{IsCA: false}
	good := hexOf(digest(1))
	tests := []struct {
		name string
		cfg  VerifierConfig
		want []string
	}{
		{"nothing trusted", VerifierConfig{TrustDomain: testTD}, []string{"EKCAs or EKHashAllowList must be set"}},
		{"no trust domain", VerifierConfig{EKCAs: []*x509.Certificate{ca}}, []string{"TrustDomain: must be set"}},
		{"leaf as CA", VerifierConfig{TrustDomain: testTD, EKCAs: []*x509.Certificate{leaf}}, []string{"EKCAs[0]: not a CA certificate"}},
		{"bad hashes", VerifierConfig{TrustDomain: testTD, EKHashAllowList: []string{good, "abc", strings.Repeat("zz", 32)}},
			[]string{"EKHashAllowList[1]", "EKHashAllowList[2]"}},
		{"bad selection", VerifierConfig{TrustDomain: testTD, EKCAs: []*x509.Certificate{ca}, PCRSelection: []int{3, 24, 3}},
			[]string{"PCR 24: must be from 0 to 23", "PCR 3 listed twice"}},
		{"bad golden sets", VerifierConfig{TrustDomain: testTD, EKCAs: []*x509.Certificate{ca}, PCRPolicies: []PCRPolicy{
			{Name: "Bad Name", PCRs: map[int][]string{0: {good}}},
			{Name: "unselected", PCRs: map[int][]string{16: {good}}},
			{Name: "bad-value", PCRs: map[int][]string{1: {"xyz"}}},
			{Name: "empty", PCRs: map[int][]string{}},
			{Name: "dup", PCRs: map[int][]string{0: {good}}},
			{Name: "dup", PCRs: map[int][]string{0: {good}}},
		}}, []string{
			`PCRPolicies[Bad Name]: name "Bad Name"`,
			"PCRPolicies[unselected].PCRs[16]: PCR 16 is not in PCRSelection",
			"PCRPolicies[bad-value].PCRs[1][0]",
			"PCRPolicies[empty]: lists no PCRs",
			"PCRPolicies[dup]: name used twice",
		}},
		{"interval too short", VerifierConfig{TrustDomain: testTD, EKCAs: []*x509.Certificate{ca}, RequoteInterval: time.Millisecond},
			[]string{"RequoteInterval: 1ms is shorter than 1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVerifier(tt.cfg)
			if err == nil {
				t.Fatal("NewVerifier succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestNewVerifier_Defaults(t *testing.T) {
	upper := strings.ToUpper(hexOf(digest(0xab)))
	v := newVerifier(t, VerifierConfig{TrustDomain: testTD, EKHashAllowList: []string{upper}})
	if !v.trust.allow[hexOf(digest(0xab))] {
		t.Errorf("allow-list %v lacks the upper-case hash in the form EK hashes are compared", v.trust.allow)
	}
	if diff := cmp.Diff(DefaultPCRSelection, v.policy.selection); diff != "" {
		t.Errorf("selection (-want +got):\n%s", diff)
	}
	if v.ReattestInterval() != DefaultRequoteInterval {
		t.Errorf("ReattestInterval = %v, want %v", v.ReattestInterval(), DefaultRequoteInterval)
	}
}

func TestParseAKType(t *testing.T) {
	for in, want := range map[string]AKType{"": AKECP256, "ec-p256": AKECP256, "rsa-2048": AKRSA2048} {
		if got, err := ParseAKType(in); err != nil || got != want {
			t.Errorf("ParseAKType(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseAKType("rsa-1024"); err == nil || !strings.Contains(err.Error(), "ec-p256, rsa-2048") {
		t.Errorf("ParseAKType(rsa-1024) err = %v, want one listing the types", err)
	}
	if _, err := NewEvidence(EvidenceConfig{AKType: "dsa"}); err == nil || !strings.Contains(err.Error(), "AKType") {
		t.Errorf("NewEvidence(dsa) err = %v, want one naming AKType", err)
	}
}
