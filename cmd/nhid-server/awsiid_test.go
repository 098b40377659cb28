package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/attestors/awsiid"
	"github.com/nhid/nhid/attestors/awsiid/awsiidtest"
	"github.com/nhid/nhid/pkg/server"
	"github.com/nhid/nhid/pkg/store/bolt"
)

func TestToNodeAttestors_AWSIIDFromTheFile(t *testing.T) {
	east, west := awsiidtest.NewSigner(t), awsiidtest.NewSigner(t)
	certs := awsiidtest.WriteCertFile(t, east, west)
	path := writeConfig(t, `version: 1
server:
  data_dir: /var/lib/nhid/server
  aws_iid:
    enabled: true
    certificates_file: `+certs+`
    accounts: ["123456789012", "210987654321"]
    regions: [us-east-1, eu-west-1]
    max_instance_age: 720h
`)
	s, err := resolveArgs(t, "--config", path)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	got, err := toNodeAttestors(s)
	if err != nil {
		t.Fatalf("toNodeAttestors: %v", err)
	}
	if got.awsiid == nil || len(got.awsiid.Certificates) != 2 ||
		!got.awsiid.Certificates[0].Equal(east.Cert) || !got.awsiid.Certificates[1].Equal(west.Cert) {
		t.Fatalf("aws_iid config %+v lacks the two certificates", got.awsiid)
	}
	want := &awsiid.VerifierConfig{
		Accounts:       []string{"123456789012", "210987654321"},
		Regions:        []string{"us-east-1", "eu-west-1"},
		MaxInstanceAge: 720 * time.Hour,
	}
	if diff := cmp.Diff(want, got.awsiid, cmpopts.IgnoreFields(awsiid.VerifierConfig{}, "TrustDomain", "Certificates")); diff != "" {
		t.Errorf("aws_iid config (-want +got):\n%s", diff)
	}

	// The binary's list of node attestors includes it, with the server's
	// trust domain.
	vs, err := nodeVerifiers(server.VerifierDeps{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Store: openBolt(t)}, got)
	if err != nil {
		t.Fatalf("nodeVerifiers: %v", err)
	}
	var types []string
	for _, v := range vs {
		types = append(types, v.Type())
	}
	if !slices.Contains(types, awsiid.Type) {
		t.Errorf("node attestors %v lack aws_iid", types)
	}
}

func TestToNodeAttestors_AWSIIDIsOffUnlessEnabled(t *testing.T) {
	got, err := toNodeAttestors(defaults())
	if err != nil || got.awsiid != nil {
		t.Errorf("toNodeAttestors(defaults) = %+v, %v; want the aws_iid attestor off", got.awsiid, err)
	}
	s := defaults()
	s.AWSIID = awsiidSettings{Accounts: []string{"123456789012"}, CertificatesFile: "/nonexistent.pem"}
	got, err = toNodeAttestors(s)
	if err != nil || got.awsiid != nil {
		t.Errorf("toNodeAttestors(enabled: false) = %+v, %v; want the aws_iid attestor off", got.awsiid, err)
	}
}

// A forgotten account list must not admit every AWS account.
func TestToNodeAttestors_AWSIIDNeedsAccountsAndCertificates(t *testing.T) {
	s := defaults()
	s.AWSIID = awsiidSettings{Enabled: true}
	_, err := toNodeAttestors(s)
	for _, want := range []string{
		"server.aws_iid.certificates_file: must be set",
		"server.aws_iid.accounts: must name at least one AWS account ID",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
}

func TestToNodeAttestors_ReportsEveryAWSIIDProblemWithItsPath(t *testing.T) {
	notPEM := writeConfig(t, "not a certificate")
	tests := []struct {
		name string
		s    awsiidSettings
		want []string
	}{
		{"bad values", awsiidSettings{
			Enabled: true, CertificatesFile: filepath.Join(t.TempDir(), "missing.pem"),
			Accounts: []string{"1234", "123456789012"}, Regions: []string{"us-east-1", "US East"},
			MaxInstanceAge: "30s",
		}, []string{
			"server.aws_iid.certificates_file: open ",
			`server.aws_iid.accounts[0]: account "1234": must be an AWS account ID of 12 digits`,
			`server.aws_iid.regions[1]: region "US East": must be an AWS region code`,
			"server.aws_iid.max_instance_age: 30s is outside 1m0s to",
		}},
		{"no certificate in the file", awsiidSettings{Enabled: true, CertificatesFile: notPEM, Accounts: []string{"123456789012"},
			MaxInstanceAge: "a week"}, []string{
			"server.aws_iid.certificates_file: " + notPEM + ": no PEM CERTIFICATE block",
			`server.aws_iid.max_instance_age: "a week" is not a duration`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := defaults()
			s.AWSIID = tt.s
			_, err := toNodeAttestors(s)
			if err == nil {
				t.Fatal("toNodeAttestors succeeded, want errors")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("errors lack %q:\n%s", want, err)
				}
			}
		})
	}
}

func openBolt(t *testing.T) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "server.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
