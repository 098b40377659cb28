package main

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nhid/nhid/pkg/server"
	"github.com/nhid/nhid/pkg/svid"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// resolveArgs parses args as the run command does and resolves settings.
func resolveArgs(t *testing.T, args ...string) (settings, error) {
	t.Helper()
	o := &options{fl: defaults()}
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	o.bind(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o.resolve(fs)
}

// convertArgs resolves args as the run command does (which must succeed)
// and returns what toServerConfig makes of them.
func convertArgs(t *testing.T, args ...string) (server.Config, error) {
	t.Helper()
	s, err := resolveArgs(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return toServerConfig(s)
}

// mustConvert is convertArgs for settings that must be accepted.
func mustConvert(t *testing.T, args ...string) server.Config {
	t.Helper()
	cfg, err := convertArgs(t, args...)
	if err != nil {
		t.Fatalf("toServerConfig: %v", err)
	}
	return cfg
}

func TestToServerConfig_DataDirAloneIsEnough(t *testing.T) {
	cfg := mustConvert(t, "--data-dir", "./data")
	abs, _ := filepath.Abs("./data")
	want := server.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), DataDir: abs,
		BindAddress: "127.0.0.1:8081", AdminSocket: "/run/nhid/server.sock", HealthAddress: "127.0.0.1:8082",
		RelyingPartyAddress: "127.0.0.1:8443",
	}
	if diff := cmp.Diff(want, cfg, cmpopts.IgnoreUnexported(spiffeid.TrustDomain{})); diff != "" {
		t.Errorf("config mismatch (-want +got):\n%s", diff)
	}
	if cfg.TrustDomain.Name() != "example.org" {
		t.Errorf("trust domain = %q", cfg.TrustDomain.Name())
	}
}

func TestResolve_FlagsWinOverTheFileWhichWinsOverDefaults(t *testing.T) {
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/from-file
  trust_domain: file.example
  bind: 0.0.0.0:9000
  health_address: 127.0.0.1:9100
  log_level: debug
  ca:
    key_type: ec-p384
    ttl: 48h
    subject: {country: DE, organization: Acme, common_name: Acme CA}
  jwt: {key_type: rsa-2048}
  svid: {default_x509_ttl: 2h, default_jwt_ttl: 10m, agent_ttl: 30m}
  join_token: {default_ttl: 1h}
  admin: {allowed_uids: [1000, 1001], allowed_gids: [50]}
`)
	args := []string{"--config", path, "--trust-domain", "flag.example", "--health-address", ""}
	s, err := resolveArgs(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustConvert(t, args...)
	want := server.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("flag.example"), DataDir: "/srv/from-file",
		BindAddress: "0.0.0.0:9000", AdminSocket: "/run/nhid/server.sock", HealthAddress: "",
		CA: server.CAConfig{KeyType: svid.KeyTypeECP384, JWTKeyType: svid.KeyTypeRSA2048, TTL: 48 * time.Hour,
			Subject: pkix.Name{Country: []string{"DE"}, Organization: []string{"Acme"}, CommonName: "Acme CA"}},
		SVID:                server.SVIDConfig{DefaultX509TTL: 2 * time.Hour, DefaultJWTTTL: 10 * time.Minute, AgentTTL: 30 * time.Minute},
		JoinTokenDefaultTTL: time.Hour,
		AdminAllowedUIDs:    []uint32{1000, 1001},
		AdminAllowedGIDs:    []uint32{50},
		RelyingPartyAddress: "127.0.0.1:8443",
	}
	if diff := cmp.Diff(want, cfg, cmpopts.IgnoreUnexported(spiffeid.TrustDomain{})); diff != "" {
		t.Errorf("config mismatch (-want +got):\n%s", diff)
	}
	if cfg.TrustDomain.Name() != "flag.example" || s.LogLevel != "debug" {
		t.Errorf("trust domain %q, log level %q", cfg.TrustDomain.Name(), s.LogLevel)
	}
}

func TestToServerConfig_ReportsEveryProblemWithItsPath(t *testing.T) {
	path := writeConfig(t, `version: 1
server:
  trust_domain: "Not A Domain"
  bind: nowhere
  admin_socket: relative.sock
  log_level: loud
  log_format: xml
  ca:
    key_type: dsa
    ttl: 1m
    upstream: {cert_file: /nonexistent/up.pem}
  jwt: {key_type: ec-p999}
  svid: {default_x509_ttl: soon, agent_ttl: -1h}
  join_token: {default_ttl: 30d}
`)
	_, err := convertArgs(t, "--config", path)
	if err == nil {
		t.Fatal("toServerConfig succeeded, want errors")
	}
	for _, want := range []string{
		`server.trust_domain: "Not A Domain" is not a trust domain`,
		`server.bind: "nowhere" is not host:port`,
		`server.admin_socket: "relative.sock" must be an absolute path`,
		`server.ca.key_type: key type "dsa": must be one of ec-p256, ec-p384, rsa-2048`,
		`server.jwt.key_type: key type "ec-p999"`,
		"server.ca.ttl: 1m is outside 10m0s to",
		"server.ca.upstream.key_file: required when cert_file is set",
		`server.svid.default_x509_ttl: "soon" is not a duration`,
		"server.svid.agent_ttl: must not be negative, got -1h",
		`server.join_token.default_ttl: "30d" is not a duration`,
		`server.log_level: must be one of debug, info, warn, error, got "loud"`,
		`server.log_format: must be one of text, json, got "xml"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}

func TestExecute_Validate(t *testing.T) {
	good := writeConfig(t, "version: 1\nserver:\n  data_dir: /tmp/x\n")
	typo := writeConfig(t, "version: 1\nserver:\n  ca:\n    key_tpye: ec-p256\n")
	old := writeConfig(t, "version: 2\nserver: {}\n")
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderrIn []string
	}{
		{"valid file", []string{"validate", "--config", good}, 0, good + ": configuration is valid\n", nil},
		{"unknown key", []string{"validate", "--config", typo}, 2, "", []string{"server.ca.key_tpye: unknown key"}},
		{"unsupported version", []string{"validate", "--config", old}, 2, "", []string{"version: 2 is not supported (supported versions: 1)"}},
		{"no config", []string{"validate"}, 2, "", []string{"--config FILE is required"}},
		{"unknown flag", []string{"run", "--nope"}, 2, "", []string{"unknown flag: --nope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := execute(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code || stdout.String() != tt.stdout {
				t.Errorf("exit %d, stdout %q; want %d, %q (stderr %q)", code, stdout.String(), tt.code, tt.stdout, stderr.String())
			}
			for _, w := range tt.stderrIn {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

func TestExecute_RunServesUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "server.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, []string{"run", "--data-dir", filepath.Join(dir, "data"), "--bind", "127.0.0.1:0",
			"--admin-socket", sock, "--health-address", "", "--relying-party-address", "", "--log-format", "json"}, &bytes.Buffer{}, &stderr)
	}()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		resp, err := adminv1.NewBundleServiceClient(conn).GetBundle(cctx, &adminv1.GetBundleRequest{})
		ccancel()
		if err == nil {
			if resp.GetBundle().GetTrustDomain() != "example.org" || len(resp.GetBundle().GetX509Authorities()) == 0 {
				t.Errorf("bundle = %v", resp.GetBundle())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin API not answering within 10s: %v\nstderr:\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d, want 0; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop within 20s of cancellation")
	}
}
