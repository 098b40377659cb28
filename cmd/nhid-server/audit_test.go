package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/server"
)

func TestToServerConfig_AuditSection(t *testing.T) {
	sink := filepath.Join(t.TempDir(), "audit.jsonl")
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  audit: {checkpoint_every: 500, checkpoint_interval: 30s, sink: `+sink+`, buffer: 4096}
`)
	cfg := mustConvert(t, "--config", path)
	want := server.AuditConfig{CheckpointEvery: 500, CheckpointInterval: 30 * time.Second, Sink: sink, Buffer: 4096}
	if diff := cmp.Diff(want, cfg.Audit); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
}

func TestToServerConfig_AuditSectionReportsProblemsWithTheirPaths(t *testing.T) {
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  audit: {checkpoint_every: -1, checkpoint_interval: 10ms, sink: relative.jsonl, buffer: 2000000}
`)
	_, err := convertArgs(t, "--config", path)
	for _, want := range []string{
		"server.audit.checkpoint_every", "server.audit.checkpoint_interval", "server.audit.sink", "server.audit.buffer",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	// Unknown keys are refused.
	path = writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  audit: {checkpoints: 5}\n")
	if _, err := resolveArgs(t, "--config", path); err == nil || !strings.Contains(err.Error(), "server.audit.checkpoints") {
		t.Errorf("an unknown audit key: %v", err)
	}
	// A sink in a missing directory is caught before the server starts.
	path = writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  audit: {sink: /nonexistent/dir/audit.jsonl}\n")
	if _, err := convertArgs(t, "--config", path); err == nil || !strings.Contains(err.Error(), "server.audit.sink") {
		t.Errorf("a sink in a missing directory: %v", err)
	}
}
