package main

import (
	"strings"
	"testing"
	"time"
)

func TestToServerConfig_ApprovalsTimeout(t *testing.T) {
	path := writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  approvals: {timeout: 45m}\n")
	cfg := mustConvert(t, "--config", path)
	if cfg.Approvals.Timeout != 45*time.Minute {
		t.Errorf("approval timeout %v, want 45m", cfg.Approvals.Timeout)
	}
}

func TestToServerConfig_ApprovalsProblemsNameTheirPath(t *testing.T) {
	tests := []struct{ name, section, want string }{
		{"not a duration", "approvals: {timeout: 30d}", `server.approvals.timeout: "30d" is not a duration`},
		{"above the maximum", "approvals: {timeout: 200h}", "server.approvals.timeout: 200h is outside 1s to 168h0m0s"},
		{"below the minimum", "approvals: {timeout: 10ms}", "server.approvals.timeout: 10ms is outside"},
		{"unknown key", "approvals: {timout: 5m}", "timout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  "+tt.section+"\n")
			s, err := resolveArgs(t, "--config", path)
			if err == nil {
				_, err = toServerConfig(s)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
