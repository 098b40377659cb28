package main

import (
	"os"
	"path/filepath"
	"time"

	"github.com/nhid/nhid/pkg/audit/auditlog"
	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/server"
)

// Bounds of the audit settings.
const (
	maxCheckpointEvery    = 1_000_000
	minCheckpointInterval = time.Second
	maxCheckpointInterval = 24 * time.Hour
	maxAuditBuffer        = 1_000_000
	minAuditLinger        = time.Millisecond
	maxAuditLinger        = time.Second
)

// auditSettings tune the audit trail (docs/audit.md); zero values take
// the defaults.
type auditSettings struct {
	// CheckpointEvery signs a checkpoint after this many records; 1000.
	CheckpointEvery int `yaml:"checkpoint_every"`
	// CheckpointInterval signs one this often when anything was appended;
	// 1m.
	CheckpointInterval string `yaml:"checkpoint_interval"`
	// Sink streams records as JSON lines: "stdout" or an absolute path.
	Sink string `yaml:"sink"`
	// Buffer is how many records may wait to be appended; 16384.
	Buffer int `yaml:"buffer"`
	// Linger is how long the writer gathers records before a commit; 10ms.
	Linger string `yaml:"linger"`
}

// auditConfig converts the audit section.
func auditConfig(errs *config.Errors, path string, a auditSettings) server.AuditConfig {
	out := server.AuditConfig{
		CheckpointEvery:    a.CheckpointEvery,
		CheckpointInterval: ttl(errs, config.Join(path, "checkpoint_interval"), a.CheckpointInterval, minCheckpointInterval, maxCheckpointInterval),
		Buffer:             a.Buffer,
		Linger:             ttl(errs, config.Join(path, "linger"), a.Linger, minAuditLinger, maxAuditLinger),
	}
	if a.CheckpointEvery < 0 || a.CheckpointEvery > maxCheckpointEvery {
		errs.Addf(config.Join(path, "checkpoint_every"), "%d is outside 1 to %d (0 means 1000)", a.CheckpointEvery, maxCheckpointEvery)
	}
	if a.Buffer < 0 || a.Buffer > maxAuditBuffer {
		errs.Addf(config.Join(path, "buffer"), "%d is outside 1 to %d (0 means %d)", a.Buffer, maxAuditBuffer, auditlog.DefaultBuffer)
	}
	switch sink := a.Sink; {
	case sink == "" || sink == auditlog.SinkStdout:
		out.Sink = sink
	case !filepath.IsAbs(sink):
		errs.Addf(config.Join(path, "sink"), "%q must be %s or an absolute file path", sink, auditlog.SinkStdout)
	default:
		if fi, err := os.Stat(filepath.Dir(sink)); err != nil || !fi.IsDir() {
			errs.Addf(config.Join(path, "sink"), "%q: its directory does not exist", sink)
		}
		out.Sink = sink
	}
	return out
}
