package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const validToken = "0123456789abcdef01234567.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// settingsFor parses args as the run command does and merges them.
func settingsFor(t *testing.T, args ...string) (settings, error) {
	t.Helper()
	cmd, o := newRunCommand(&bytes.Buffer{}, func(string) string { return "" })
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("ParseFlags: %v", err)
	}
	return gather(o.configPath, o.fl, cmd.Flags())
}

func TestGather_FlagsWinOverTheFileWhichWinsOverDefaults(t *testing.T) {
	file := writeFile(t, "agent.yaml", `version: 1
agent:
  server: file-server:8081
  trust_domain: file.example
  socket: /tmp/file.sock
  health_address: 127.0.0.1:9999
  max_pre_minted_svids: 50
  log_format: json
`)
	tests := []struct {
		name string
		args []string
		want func(*settings)
	}{
		{"file only", []string{"--config", file}, func(s *settings) {}},
		{"flags override", []string{"--config", file, "--server", "flag-server:1", "--socket", "/tmp/flag.sock", "--max-pre-minted-svids", "7"},
			func(s *settings) { s.Server, s.Socket, s.MaxPreMintedSVIDs = "flag-server:1", "/tmp/flag.sock", 7 }},
		{"an empty flag still wins", []string{"--config", file, "--health-address", ""},
			func(s *settings) { s.HealthAddress = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := defaults()
			want.Server, want.TrustDomain, want.Socket = "file-server:8081", "file.example", "/tmp/file.sock"
			want.HealthAddress, want.MaxPreMintedSVIDs, want.LogFormat = "127.0.0.1:9999", 50, "json"
			tt.want(&want)
			got, err := settingsFor(t, tt.args...)
			if err != nil {
				t.Fatalf("gather: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGather_ConfigFileIsStrict(t *testing.T) {
	tests := []struct {
		name, content, wantErr string
	}{
		{"unknown key", "version: 1\nagent:\n  server: s:1\n  sockt: /x\n", "agent.sockt"},
		{"wrong version", "version: 2\nagent: {}\n", "version"},
		{"wrong type", "version: 1\nagent:\n  max_pre_minted_svids: many\n", "agent.max_pre_minted_svids"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := settingsFor(t, "--config", writeFile(t, "agent.yaml", tt.content))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestCheck_ReportsEveryProblemWithItsSetting(t *testing.T) {
	tokenFile := writeFile(t, "token", validToken+"\n")
	base := func() settings {
		s := defaults()
		s.Server, s.TrustDomain = "server:8081", "example.org"
		return s
	}
	tests := []struct {
		name      string
		mod       func(*settings)
		env       string
		wantToken string
		wantErrs  []string
	}{
		{"valid", func(*settings) {}, "", "", nil},
		{"missing server and trust domain", func(s *settings) { s.Server, s.TrustDomain = "", "" }, "", "",
			[]string{"agent.server", "agent.trust_domain"}},
		{"bad trust domain", func(s *settings) { s.TrustDomain = "Example.ORG" }, "", "", []string{"agent.trust_domain"}},
		{"bundle and insecure", func(s *settings) { s.TrustBundle, s.InsecureBootstrap = "/b.pem", true }, "", "",
			[]string{"agent.insecure_bootstrap"}},
		{"token and token file", func(s *settings) { s.JoinToken, s.JoinTokenFile = validToken, tokenFile }, "", "",
			[]string{"agent.join_token_file"}},
		{"missing token file", func(s *settings) { s.JoinTokenFile = "/no/such/file" }, "", "", []string{"agent.join_token_file"}},
		{"bad log format", func(s *settings) { s.LogFormat = "xml" }, "", "", []string{"agent.log_format"}},
		{"token from file", func(s *settings) { s.JoinTokenFile = tokenFile }, "", validToken, nil},
		{"token from the environment", func(*settings) {}, validToken, validToken, nil},
		{"the token setting wins over the environment", func(s *settings) { s.JoinToken = "from-flag" }, validToken, "from-flag", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.mod(&s)
			r, err := s.check(func(k string) string {
				if k == envJoinToken {
					return tt.env
				}
				return ""
			})
			if len(tt.wantErrs) == 0 {
				if err != nil {
					t.Fatalf("check: %v", err)
				}
				if r.joinToken != tt.wantToken {
					t.Errorf("join token resolved differently than expected (got %d chars)", len(r.joinToken))
				}
				return
			}
			if err == nil {
				t.Fatalf("check succeeded, want errors for %v", tt.wantErrs)
			}
			for _, want := range tt.wantErrs {
				if !strings.Contains(err.Error(), want+":") {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
		})
	}
}

func TestExecute_ExitCodesAndMessages(t *testing.T) {
	dataDir := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"unknown flag", []string{"run", "--nope"}, 2, "unknown flag"},
		{"missing settings", []string{"run", "--data-dir", dataDir, "--trust-domain", ""}, 2, "agent.trust_domain"},
		{"no way to trust the server", []string{"run", "--data-dir", dataDir, "--server", "127.0.0.1:1",
			"--trust-domain", "example.org", "--join-token", validToken, "--health-address", ""}, 1,
			"pass --trust-bundle FILE"},
		{"malformed join token", []string{"run", "--data-dir", dataDir, "--server", "127.0.0.1:1",
			"--trust-domain", "example.org", "--insecure-bootstrap", "--join-token", "short"}, 2, "join token: must be"},
		{"no join token and nothing stored", []string{"run", "--data-dir", dataDir, "--server", "127.0.0.1:1",
			"--trust-domain", "example.org", "--insecure-bootstrap", "--health-address", ""}, 1, "pass --join-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := execute(context.Background(), tt.args, &stdout, &stderr, func(string) string { return "" })
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), tt.wantCode, tt.wantErr)
			}
			if strings.Contains(stderr.String(), validToken) {
				t.Error("the join token was printed")
			}
		})
	}
}
