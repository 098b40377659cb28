package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/server"
)

func writeSecret(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestToServerConfig_ReputationAndNotifySections(t *testing.T) {
	secret := writeSecret(t, strings.Repeat("k", 40)+"\n", 0o600)
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  reputation:
    baseline: 600
    half_life: 12h
    alert_below: 350
    restrict_below: 150
    weights: {grant_denied: -40, grant_released: 2}
    max_events: 20
    report_rate: 30
    report_burst: 5
  notify:
    webhook: {url: "https://hooks.example.org/nhid", secret_file: `+secret+`, timeout: 5s, max_attempts: 4}
`)
	cfg := mustConvert(t, "--config", path)
	want := server.ReputationConfig{
		Baseline: 600, HalfLife: 12 * time.Hour, AlertBelow: 350, RestrictBelow: 150,
		Weights:   map[reputation.Kind]float64{reputation.KindGrantDenied: -40, reputation.KindGrantReleased: 2},
		MaxEvents: 20, ReportsPerMinute: 30, ReportBurst: 5,
	}
	if diff := cmp.Diff(want, cfg.Reputation); diff != "" {
		t.Errorf("reputation (-want +got):\n%s", diff)
	}
	wantNotify := server.NotifyConfig{Webhook: server.WebhookConfig{
		URL: "https://hooks.example.org/nhid", SecretFile: secret, Timeout: 5 * time.Second, MaxAttempts: 4,
	}}
	if diff := cmp.Diff(wantNotify, cfg.Notify); diff != "" {
		t.Errorf("notify (-want +got):\n%s", diff)
	}
	if _, err := server.New(serverConfigForCheck(cfg)); err != nil {
		t.Errorf("the server refuses the converted settings: %v", err)
	}
}

// serverConfigForCheck fills what the binary adds, so that server.New
// can check the converted settings.
func serverConfigForCheck(cfg server.Config) server.Config {
	cfg.NodeVerifiers = func(server.VerifierDeps) ([]attestor.NodeVerifier, error) { return nil, nil }
	return cfg
}

func TestToServerConfig_ReputationCanBeDisabled(t *testing.T) {
	path := writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  reputation: {enabled: false}\n")
	s, err := resolveArgs(t, "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := toServerConfig(s)
	if err != nil || !cfg.Reputation.Disabled {
		t.Errorf("reputation.enabled: false gave %+v, %v", cfg.Reputation, err)
	}
}

func TestToServerConfig_ReputationAndNotifyProblemsNameTheirPaths(t *testing.T) {
	worldReadable := writeSecret(t, strings.Repeat("k", 40), 0o644)
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  reputation:
    baseline: 1200
    half_life: 1s
    alert_below: 250
    restrict_below: 260
    weights: {grant_denyed: -40, misuse_reported: -5000}
    max_events: 5000
    report_rate: -1
    report_burst: -2
  notify:
    webhook: {url: "ftp://hooks.example.org/nhid", secret_file: `+worldReadable+`, timeout: 1h, max_attempts: 500}
`)
	_, err := convertArgs(t, "--config", path)
	if err == nil {
		t.Fatal("toServerConfig accepted bad settings")
	}
	for _, want := range []string{
		"server.reputation.baseline: 1200 is not within 1 to 1000",
		"server.reputation.half_life",
		"server.reputation.restrict_below: 260 must be below alert_below (250)",
		"server.reputation.weights.grant_denyed: unknown event kind",
		"server.reputation.weights.misuse_reported: -5000",
		"server.reputation.max_events",
		"server.reputation.report_rate",
		"server.reputation.report_burst",
		`server.notify.webhook.url: scheme "ftp"`,
		"server.notify.webhook.secret_file: webhook secret: " + worldReadable + " is readable by other users",
		"server.notify.webhook.timeout",
		"server.notify.webhook.max_attempts",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	// Webhook settings without a URL, and a URL without a secret.
	for body, want := range map[string]string{
		"notify: {webhook: {secret_file: /x}}":          "server.notify.webhook.url: required",
		"notify: {webhook: {url: \"https://h/x\"}}":     "server.notify.webhook.secret_file: required",
		"reputation: {weights: {grant_denied: bogus}}":  "server.reputation.weights.grant_denied",
		"reputation: {enabled: maybe}":                  "server.reputation.enabled",
		"reputation: {alert_below: 600}":                "server.reputation.alert_below: 600 is above the baseline 500",
		"reputation: {weights: {reset: 10}}":            "server.reputation.weights.reset: unknown event kind",
		"notify: {webhook: {url: \"https://u:p@h/x\"}}": "may not hold user info",
	} {
		path := writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  "+body+"\n")
		s, err := resolveArgs(t, "--config", path)
		if err == nil {
			_, err = toServerConfig(s)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", body, err, want)
		}
	}
}
