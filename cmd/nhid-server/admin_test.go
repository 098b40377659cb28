package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/server/adminapi"
)

func TestToServerConfig_AdminMTLSSettingsAndTheFlagWins(t *testing.T) {
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  admin:
    address: "0.0.0.0:8444"
    allowed_spiffe_ids: ["spiffe://example.org/ops/bootstrap"]
    roles:
      - {name: approvers, spiffe_ids: ["spiffe://example.org/approvers/*"], permissions: [approve]}
`)
	cfg := mustConvert(t, "--config", path)
	want := []spiffeid.ID{spiffeid.RequireFromString("spiffe://example.org/ops/bootstrap")}
	if cfg.AdminAddress != "0.0.0.0:8444" || !cmp.Equal(want, cfg.AdminAllowedIDs, cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })) {
		t.Errorf("admin address %q, allowed %v", cfg.AdminAddress, cfg.AdminAllowedIDs)
	}
	if len(cfg.AdminRoles) != 1 || cfg.AdminRoles[0].Name != "approvers" || len(cfg.AdminRoles[0].IDs) != 1 ||
		!cfg.AdminRoles[0].IDs[0].Match(spiffeid.RequireFromString("spiffe://example.org/approvers/alice")) ||
		!slices.Equal(cfg.AdminRoles[0].Permissions, []adminapi.Permission{adminapi.PermApprove}) {
		t.Errorf("admin roles %+v", cfg.AdminRoles)
	}
	if cfg := mustConvert(t, "--config", path, "--admin-address", ""); cfg.AdminAddress != "" {
		t.Errorf("--admin-address \"\" over the file: %q; want it disabled", cfg.AdminAddress)
	}
	if cfg := mustConvert(t, "--data-dir", "/srv/nhid"); cfg.AdminAddress != "" {
		t.Errorf("default admin address %q; want none (the socket only)", cfg.AdminAddress)
	}
}

func TestToServerConfig_AdminMTLSProblemsNameTheirPaths(t *testing.T) {
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  admin:
    address: "nowhere"
    allowed_spiffe_ids: ["spiffe://example.org/ok", "not a spiffe id", "spiffe://other.org/ops"]
    roles:
      - {name: a, spiffe_ids: ["spiffe://example.org/a/*"], permissions: [read]}
      - {name: a, spiffe_ids: ["spiffe://example.org/b/**"], permissions: [root]}
      - {spiffe_ids: [], permissions: []}
`)
	_, err := convertArgs(t, "--config", path)
	for _, want := range []string{
		"server.admin.address",
		`server.admin.allowed_spiffe_ids[1]: "not a spiffe id" is not a SPIFFE ID`,
		`server.admin.allowed_spiffe_ids[2]: "spiffe://other.org/ops" is not in trust domain "example.org"`,
		`server.admin.roles[1].name: "a" is the name of an earlier role`,
		"server.admin.roles[1].spiffe_ids[0]",
		`server.admin.roles[1].permissions[0]: unknown permission "root"`,
		"server.admin.roles[2].name: required",
		"server.admin.roles[2].spiffe_ids: at least one",
		"server.admin.roles[2].permissions: at least one",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "allowed_spiffe_ids[0]") || strings.Contains(err.Error(), "roles[0]") {
		t.Errorf("error %v blames a valid ID", err)
	}
}
