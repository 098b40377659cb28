package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agent/internal/agenttest"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type noSelectors struct{}

func (noSelectors) Attest(context.Context, int32) (selector.Set, error) {
	return selector.NewSet(), nil
}

func validConfig(t *testing.T) Config {
	t.Helper()
	return Config{
		TrustDomain:       spiffeid.RequireTrustDomainFromString("example.org"),
		DataDir:           filepath.Join(t.TempDir(), "data"),
		ServerAddress:     "nhid-server:8081",
		InsecureBootstrap: true,
		NodeEvidence:      agenttest.Evidence{},
		WorkloadAttestor:  noSelectors{},
		SocketPath:        "/tmp/agent.sock",
	}
}

func TestNew_ValidatesConfig(t *testing.T) {
	tests := []struct {
		name     string
		mod      func(*Config)
		wantErrs []string
	}{
		{"valid", func(*Config) {}, nil},
		{"everything missing", func(c *Config) { *c = Config{} },
			[]string{"trust_domain", "data_dir", "server_address", "workload attestor"}},
		{"bad addresses", func(c *Config) { c.ServerAddress, c.HealthAddress = "nhid-server", ":x" },
			[]string{"server_address", "health_address"}},
		{"bundle and insecure", func(c *Config) { c.TrustBundleFile = "/b.pem" }, []string{"trust_bundle and insecure_bootstrap"}},
		{"relative socket", func(c *Config) { c.SocketPath = "agent.sock" }, []string{"socket_path"}},
		{"bad key type", func(c *Config) { c.KeyType = "dsa" }, []string{"key_type"}},
		{"negative bound", func(c *Config) { c.MaxPreMintedSVIDs = -1 }, []string{"max_pre_minted_svids"}},
		{"no way to trust the server", func(c *Config) { c.InsecureBootstrap = false }, []string{"pass --trust-bundle FILE"}},
		{"no evidence and no stored SVID", func(c *Config) { c.NodeEvidence = nil }, []string{"pass --join-token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig(t)
			tt.mod(&cfg)
			_, err := New(cfg)
			if len(tt.wantErrs) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				fi, err := os.Stat(cfg.DataDir)
				if err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("data dir = %v, %v; want it created 0700", fi, err)
				}
				return
			}
			for _, want := range tt.wantErrs {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("New error = %v, want it to mention %q", err, want)
				}
			}
		})
	}
}

func TestClassify_RecognisesTheServersNodeRefusals(t *testing.T) {
	tests := []struct {
		err        error
		wantNil    bool
		wantBanned bool
	}{
		{status.Error(codes.PermissionDenied, "node evicted: attest again"), false, false},
		{status.Error(codes.PermissionDenied, "agent SVID superseded"), false, false},
		{status.Error(codes.PermissionDenied, "node unknown: attest again"), false, false},
		{status.Error(codes.PermissionDenied, "node banned"), false, true},
		{status.Error(codes.PermissionDenied, "entry not authorised for this node"), true, false},
		{status.Error(codes.Unavailable, "node evicted"), true, false},
		{nil, true, false},
	}
	for _, tt := range tests {
		r := classify(tt.err)
		if (r == nil) != tt.wantNil || (r != nil && r.banned != tt.wantBanned) {
			t.Errorf("classify(%v) = %+v, want nil=%v banned=%v", tt.err, r, tt.wantNil, tt.wantBanned)
		}
	}
}

type reattestable struct{ agenttest.Evidence }

func (reattestable) CanReattest() bool { return false }

func TestCanReattest(t *testing.T) {
	tests := []struct {
		name string
		ev   interface{ Type() string }
		want bool
	}{
		{"join token", typed("join_token"), false},
		{"other attestor", agenttest.Evidence{}, true},
		{"attestor that says it cannot", reattestable{}, false},
		{"none", nil, false},
	}
	for _, tt := range tests {
		if got := canReattest(tt.ev); got != tt.want {
			t.Errorf("%s: canReattest = %v, want %v", tt.name, got, tt.want)
		}
	}
}

type typed string

func (t typed) Type() string { return string(t) }
