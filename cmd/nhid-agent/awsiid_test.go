package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/attestors/awsiid"
)

func TestCheck_AWSIIDSectionFromTheFile(t *testing.T) {
	file := writeFile(t, "agent.yaml", `version: 1
agent:
  server: nhid.example.org:8081
  node_attestor: aws_iid
  aws_iid:
    metadata_endpoint: http://imds-proxy.internal:8080
    timeout: 2s
`)
	s, err := settingsFor(t, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.check(env(nil))
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	want := awsiid.EvidenceConfig{MetadataEndpoint: "http://imds-proxy.internal:8080", Timeout: 2 * time.Second}
	if diff := cmp.Diff(want, r.awsiid); diff != "" {
		t.Errorf("aws_iid evidence (-want +got):\n%s", diff)
	}
	if err := validateSettings(s, env(nil)); err != nil {
		t.Errorf("validateSettings: %v", err)
	}
}

// Without a section the agent asks EC2's own metadata service.
func TestCheck_AWSIIDDefaultsToEC2sIMDS(t *testing.T) {
	s := defaults()
	s.Server, s.NodeAttestor = "nhid.example.org:8081", awsiid.Type
	r, err := s.check(env(nil))
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if r.awsiid != (awsiid.EvidenceConfig{}) {
		t.Errorf("aws_iid evidence = %+v, want the defaults", r.awsiid)
	}
	if err := validateSettings(s, env(nil)); err != nil {
		t.Errorf("validateSettings: %v", err)
	}
}

func TestCheck_ReportsEveryAWSIIDProblemWithItsSetting(t *testing.T) {
	tests := []struct {
		name string
		set  awsiidSettings
		want []string
	}{
		{"bad values", awsiidSettings{MetadataEndpoint: "169.254.169.254", Timeout: "soon"}, []string{
			`agent.aws_iid.metadata_endpoint: metadata endpoint "169.254.169.254": must be an http:// or https:// URL`,
			`agent.aws_iid.timeout: "soon" is not a duration`,
		}},
		{"out of range", awsiidSettings{MetadataEndpoint: "http://u:p@imds", Timeout: "1h"}, []string{
			"agent.aws_iid.metadata_endpoint: ", "must not hold credentials",
			"agent.aws_iid.timeout: 1h is outside 100ms to 5m0s",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := defaults()
			s.Server, s.NodeAttestor, s.AWSIID = "nhid.example.org:8081", awsiid.Type, tt.set
			_, err := s.check(env(nil))
			if err == nil {
				t.Fatal("check succeeded, want errors")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("errors lack %q:\n%s", want, err)
				}
			}
			if strings.Contains(err.Error(), "u:p@") {
				t.Errorf("errors echo the endpoint's credentials:\n%s", err)
			}
		})
	}
}

// The section is only checked when aws_iid is the node attestor.
func TestCheck_AWSIIDSectionIgnoredForOtherAttestors(t *testing.T) {
	s := defaults()
	s.Server, s.JoinToken = "nhid.example.org:8081", validToken
	s.AWSIID = awsiidSettings{Timeout: "soon"}
	if _, err := s.check(env(nil)); err != nil {
		t.Errorf("check: %v", err)
	}
}

// An agent off EC2 says so instead of waiting for a metadata service.
func TestExecute_AWSIIDOffEC2SaysSo(t *testing.T) {
	file := writeFile(t, "agent.yaml", `version: 1
agent:
  node_attestor: aws_iid
  aws_iid: {metadata_endpoint: "http://127.0.0.1:1", timeout: 1s}
`)
	var stdout, stderr bytes.Buffer
	code := execute(context.Background(), []string{"run", "--config", file, "--data-dir", t.TempDir(),
		"--server", "127.0.0.1:1", "--insecure-bootstrap", "--health-address", "", "--socket", t.TempDir() + "/a.sock"},
		&stdout, &stderr, env(nil))
	if code == 0 || !strings.Contains(stderr.String(), "not on EC2 or IMDS unreachable at http://127.0.0.1:1") {
		t.Errorf("exit %d, stderr %q; want a failure saying IMDS is unreachable", code, stderr.String())
	}
}
