package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/reputation"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

func TestServer_ReputationIsServedUnlessDisabled(t *testing.T) {
	for _, disabled := range []bool{false, true} {
		cfg := testConfig(t, filepath.Join(t.TempDir(), "data"), t.TempDir())
		cfg.Reputation.Disabled = disabled
		srv, _ := start(t, cfg)
		_, err := adminv1.NewReputationServiceClient(adminConn(t, srv)).ListReputations(context.Background(), &adminv1.ListReputationsRequest{})
		want := codes.OK
		if disabled {
			want = codes.Unimplemented
		}
		if got := status.Code(err); got != want {
			t.Errorf("disabled=%v: ListReputations = %v, want %v", disabled, err, want)
		}
	}
}

func TestNew_ReportsBadReputationSettings(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), t.TempDir())
	cfg.Reputation = ReputationConfig{AlertBelow: 250, RestrictBelow: 260, Weights: map[reputation.Kind]float64{"typo": 1}, ReportBurst: -1}
	_, err := New(cfg)
	if err == nil {
		t.Fatal("New accepted bad reputation settings")
	}
	for _, want := range []string{"RestrictBelow: 260 must be below AlertBelow (250)", `unknown kind "typo"`, "ReportBurst (-1)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err, want)
		}
	}
}

func TestServer_WebhookWithABadSecretFailsTheStart(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("tooshort"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{"missing": filepath.Join(dir, "none"), "short": short, "unset": ""} {
		cfg := testConfig(t, filepath.Join(t.TempDir(), "data"), t.TempDir())
		cfg.Notify.Webhook = WebhookConfig{URL: "https://hooks.example.org/nhid", SecretFile: file}
		srv, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = srv.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "notification webhook") {
			t.Errorf("%s secret: Run = %v, want a webhook error", name, err)
		}
	}
}
