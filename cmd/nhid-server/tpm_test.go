package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nhid/nhid/attestors/tpm"
)

// writeCAFile writes a PEM file of one certificate, a CA or not.
func writeCAFile(t *testing.T, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "EK CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ek-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestToNodeAttestors_TPMFromTheFile(t *testing.T) {
	ca := writeCAFile(t, true)
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	path := writeConfig(t, `version: 1
server:
  data_dir: /var/lib/nhid/server
  tpm:
    ek_ca_files: [`+ca+`]
    ek_hash_allow_list: [`+a+`]
    pcr_selection: [0, 4, 7]
    pcr_policies:
      fleet-2026:
        0: [`+a+`, `+b+`]
        7: [`+b+`]
    requote_interval: 2m
`)
	s, err := resolveArgs(t, "--config", path)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	got, err := toNodeAttestors(s)
	if err != nil {
		t.Fatalf("toNodeAttestors: %v", err)
	}
	if got.tpm == nil || len(got.tpm.EKCAs) != 1 || got.tpm.EKCAs[0].Subject.CommonName != "EK CA" {
		t.Fatalf("tpm config %+v lacks the EK CA", got.tpm)
	}
	want := &tpm.VerifierConfig{
		EKHashAllowList: []string{a},
		PCRSelection:    []int{0, 4, 7},
		PCRPolicies:     []tpm.PCRPolicy{{Name: "fleet-2026", PCRs: map[int][]string{0: {a, b}, 7: {b}}}},
		RequoteInterval: 2 * time.Minute,
	}
	if diff := cmp.Diff(want, got.tpm, cmpopts.IgnoreFields(tpm.VerifierConfig{}, "TrustDomain", "EKCAs")); diff != "" {
		t.Errorf("tpm config (-want +got):\n%s", diff)
	}
}

func TestToNodeAttestors_NoTPMSectionLeavesTPMOff(t *testing.T) {
	got, err := toNodeAttestors(defaults())
	if err != nil || got.tpm != nil {
		t.Errorf("toNodeAttestors(defaults) = %+v, %v; want the tpm attestor off", got.tpm, err)
	}
}

func TestToNodeAttestors_ReportsEveryTPMProblemWithItsPath(t *testing.T) {
	s := defaults()
	s.TPM = tpmSettings{
		EKCAFiles:       []string{filepath.Join(t.TempDir(), "missing.pem"), writeCAFile(t, false)},
		EKHashAllowList: []string{"cafe"},
		PCRSelection:    []int{0, 24},
		PCRPolicies: map[string]map[int][]string{
			"Golden":  {0: {strings.Repeat("a", 64)}},
			"unknown": {9: {"zz"}},
			"empty":   {},
		},
		RequoteInterval: "100ms",
	}
	_, err := toNodeAttestors(s)
	if err == nil {
		t.Fatal("toNodeAttestors succeeded, want errors")
	}
	for _, want := range []string{
		"server.tpm.ek_ca_files[0]: open ",
		"server.tpm.ek_ca_files[1]: ", "is not a CA certificate",
		`server.tpm.ek_hash_allow_list[0]: "cafe": must be a SHA-256 value of 64 hex digits`,
		"server.tpm.pcr_selection[1]: PCR 24: must be from 0 to 23",
		`server.tpm.pcr_policies.Golden: name "Golden"`,
		"server.tpm.pcr_policies.unknown.9: PCR 9 is not in pcr_selection",
		`server.tpm.pcr_policies.unknown.9[0]: "zz"`,
		"server.tpm.pcr_policies.empty: lists no PCRs",
		"server.tpm.requote_interval: 100ms is outside 1s to 24h0m0s",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%s", want, err)
		}
	}
}

func TestToNodeAttestors_TPMNeedsATrustAnchor(t *testing.T) {
	s := defaults()
	s.TPM = tpmSettings{PCRSelection: []int{7}}
	_, err := toNodeAttestors(s)
	if err == nil || !strings.Contains(err.Error(), "server.tpm: set ek_ca_files, ek_hash_allow_list or both") {
		t.Errorf("err = %v, want one saying the section trusts no TPM", err)
	}
}
