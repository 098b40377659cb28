package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/audit/auditlog"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/telemetry"
)

// AuditConfig holds the audit trail settings (docs/audit.md).
type AuditConfig struct {
	// CheckpointEvery signs a checkpoint after this many records of this
	// server; default 1000.
	CheckpointEvery int
	// CheckpointInterval signs one this often when this server appended
	// anything since the last; default 1 minute.
	CheckpointInterval time.Duration
	// Sink streams committed records and checkpoints as JSON lines:
	// "stdout", an absolute file path, or "" for none.
	Sink string
	// Buffer is how many records may wait to be appended; default 16384.
	Buffer int
	// Linger is how long the writer gathers records before it commits
	// them; default 10ms (auditlog.Config.Linger).
	Linger time.Duration
}

// auditKeyFile is where the checkpoint key lives under DataDir.
const auditKeyFile = "audit/checkpoint.key"

// checkAudit validates the audit settings.
func (cfg *Config) checkAudit() []error {
	var errs []error
	a := cfg.Audit
	if a.CheckpointEvery < 0 {
		errs = append(errs, fmt.Errorf("server config: Audit.CheckpointEvery: %d is negative", a.CheckpointEvery))
	}
	if a.CheckpointInterval < 0 {
		errs = append(errs, fmt.Errorf("server config: Audit.CheckpointInterval: %v is negative", a.CheckpointInterval))
	}
	if a.Buffer < 0 {
		errs = append(errs, fmt.Errorf("server config: Audit.Buffer: %d is negative", a.Buffer))
	}
	if a.Sink != "" && a.Sink != auditlog.SinkStdout && !filepath.IsAbs(a.Sink) {
		errs = append(errs, fmt.Errorf("server config: Audit.Sink: %q is neither %s nor an absolute path", a.Sink, auditlog.SinkStdout))
	}
	return errs
}

// auditRun is the audit log and what its writer needs to stop.
type auditRun struct {
	log    *auditlog.Log
	sink   io.WriteCloser
	cancel context.CancelFunc
	done   chan error
}

// buildAudit builds the audit log every component records into; its
// writer starts with serve and stops after the RPC servers (stopAudit).
func (s *Server) buildAudit(c *components) error {
	a := s.cfg.Audit
	run := &auditRun{}
	if a.Sink != "" {
		sink, err := auditlog.OpenSink(a.Sink)
		if err != nil {
			return err
		}
		run.sink = sink
	}
	l, err := auditlog.New(auditlog.Config{
		Store: c.store, KeyFile: filepath.Join(s.cfg.DataDir, auditKeyFile), Server: agentid.Server(s.cfg.TrustDomain).String(),
		CheckpointEvery: a.CheckpointEvery, CheckpointInterval: a.CheckpointInterval, Buffer: a.Buffer, Linger: a.Linger,
		StopTimeout: auditStopTimeout(s.cfg.ShutdownTimeout), Sink: run.sink,
		Log: s.log.With(telemetry.Component, "audit"), Metrics: s.cfg.Metrics, Clock: s.cfg.Clock,
	})
	if err != nil {
		if run.sink != nil {
			_ = run.sink.Close()
		}
		return err
	}
	run.log = l
	c.audit, c.auditRun = l, run
	return nil
}

// auditLog is what the admin API's audit service reads, nil without one.
func (c *components) auditLog() adminapi.AuditLog {
	if c.auditRun == nil {
		return nil
	}
	return c.auditRun.log
}

// startAudit starts the audit log's writer.
func (s *Server) startAudit(c *components) {
	run := c.auditRun
	if run == nil || run.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	run.cancel, run.done = cancel, make(chan error, 1)
	go func() { run.done <- run.log.Run(ctx) }()
}

// stopAudit records the server's stop and lets the writer append every
// queued record and sign a last checkpoint. It runs once nothing else
// records (the RPC servers and jobs have stopped) and before the store
// closes, so that a clean shutdown loses no record.
func (s *Server) stopAudit(c *components) {
	run := c.auditRun
	if run == nil {
		return
	}
	c.auditRun = nil
	if run.done != nil {
		run.log.Record(context.Background(), audit.Event{
			Actor: audit.ActorServer, Action: audit.ActionServerStop, Target: agentid.Server(s.cfg.TrustDomain).String(),
			Outcome: audit.OutcomeSuccess, Reason: "clean shutdown",
		})
		run.cancel()
		if err := <-run.done; err != nil {
			s.log.Error("audit log stopped with records lost", telemetry.Error, err.Error())
		}
	}
	if run.sink != nil {
		if err := run.sink.Close(); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			s.log.Warn("close audit sink", telemetry.Error, err.Error())
		}
	}
}

// auditStopTimeout bounds the final audit flush: a third of the shutdown
// timeout (at least a second), so that a store that cannot be written (an
// etcd without quorum) does not hold the process past the shutdown
// timeout its supervisor expects; what could not be written is counted
// and logged as lost.
func auditStopTimeout(shutdown time.Duration) time.Duration {
	return max(shutdown/3, time.Second)
}
