package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nhid/nhid/attestors/tpm"
)

func TestCheck_TPMSectionFromTheFile(t *testing.T) {
	file := writeFile(t, "agent.yaml", `version: 1
agent:
  server: nhid.example.org:8081
  node_attestor: tpm
  tpm:
    swtpm: 127.0.0.1:2321
    ak_type: rsa-2048
`)
	s, err := settingsFor(t, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.check(env(nil))
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	want := tpm.EvidenceConfig{SWTPM: "127.0.0.1:2321", AKType: tpm.AKRSA2048}
	if diff := cmp.Diff(want, r.tpm, cmpopts.IgnoreFields(tpm.EvidenceConfig{}, "Log")); diff != "" {
		t.Errorf("tpm evidence (-want +got):\n%s", diff)
	}
}

func TestCheck_TPMDefaultsToTheResourceManagerAndAnECCAK(t *testing.T) {
	s := defaults()
	s.Server, s.NodeAttestor = "nhid.example.org:8081", tpm.Type
	r, err := s.check(env(nil))
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if r.tpm.Device != "" || r.tpm.SWTPM != "" || r.tpm.AKType != tpm.AKECP256 {
		t.Errorf("tpm evidence = %+v, want the default device and ec-p256", r.tpm)
	}
}

func TestCheck_ReportsEveryTPMProblemWithItsSetting(t *testing.T) {
	s := defaults()
	s.Server, s.NodeAttestor = "nhid.example.org:8081", tpm.Type
	s.TPM = tpmSettings{Device: "tpmrm0", SWTPM: "localhost", AKType: "rsa-1024"}
	_, err := s.check(env(nil))
	if err == nil {
		t.Fatal("check succeeded, want errors")
	}
	for _, want := range []string{
		"agent.tpm.swtpm: cannot be combined with device",
		`agent.tpm.device: "tpmrm0" must be an absolute path`,
		`agent.tpm.swtpm: "localhost" is not HOST:PORT`,
		`agent.tpm.ak_type: AK type "rsa-1024"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%s", want, err)
		}
	}
}
