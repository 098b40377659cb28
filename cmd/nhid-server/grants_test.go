package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/server"
)

func TestToServerConfig_GrantSections(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte("version: 1\nrules: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  policy: {path: `+policy+`, timezone: Europe/Berlin}
  grants: {max_ttl: 30m, retention: 72h}
  relying_party: {address: "127.0.0.1:9443"}
`)
	cfg := mustConvert(t, "--config", path)
	got := [5]any{cfg.Policy.Path, cfg.Policy.Location.String(), cfg.Grants.MaxTTL, cfg.Grants.Retention, cfg.RelyingPartyAddress}
	want := [5]any{policy, "Europe/Berlin", 30 * time.Minute, 72 * time.Hour, "127.0.0.1:9443"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("policy path, zone, max ttl, retention, relying party (-want +got):\n%s", diff)
	}
}

func TestToServerConfig_RelyingPartyFlagWinsAndEmptyDisables(t *testing.T) {
	path := writeConfig(t, "version: 1\nserver:\n  relying_party: {address: \"127.0.0.1:9443\"}\n")
	cfg := mustConvert(t, "--config", path, "--data-dir", "/srv/nhid", "--relying-party-address", "")
	if cfg.RelyingPartyAddress != "" {
		t.Errorf("relying party address %q, want the flag's empty value", cfg.RelyingPartyAddress)
	}
	if cfg := mustConvert(t, "--data-dir", "/srv/nhid"); cfg.RelyingPartyAddress != server.DefaultRelyingPartyAddress {
		t.Errorf("default relying party address %q; want %s", cfg.RelyingPartyAddress, server.DefaultRelyingPartyAddress)
	}
}

func TestToServerConfig_GrantSectionsReportProblemsWithTheirPaths(t *testing.T) {
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  policy: {path: /nonexistent/policy.yaml, timezone: Mars/Olympus}
  grants: {max_ttl: 48h, retention: 10s}
  relying_party: {address: "nowhere"}
`)
	_, err := convertArgs(t, "--config", path)
	for _, want := range []string{
		"server.policy.path", "server.policy.timezone", "server.grants.max_ttl", "server.grants.retention",
		"server.relying_party.address",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
