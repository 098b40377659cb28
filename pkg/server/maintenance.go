package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
)

// gaugeEvery is how often the entry and node gauges are refreshed.
const gaugeEvery = 30 * time.Second

// maintenanceStore is what the periodic jobs need from the store.
type maintenanceStore interface {
	Revision(ctx context.Context) (int64, error)
	CountEntries(ctx context.Context) (int, error)
	CountNodes(ctx context.Context) (int, error)
	PruneTombstones(ctx context.Context, beforeRevision int64) error
	PruneIssued(ctx context.Context, expiredBefore time.Time) (int, error)
	PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (int, error)
	PruneGrants(ctx context.Context, endedBefore time.Time) (int, error)
}

// revSample is the store revision seen at a time: tombstones are pruned by
// revision, retention is set in time, and samples translate one to the other.
type revSample struct {
	at  time.Time
	rev int64
}

// maintenance prunes what outlived its use and keeps the count gauges.
type maintenance struct {
	st        maintenanceStore
	clock     clock.Clock
	log       *slog.Logger
	every     time.Duration
	tombstone time.Duration
	ledger    time.Duration
	tokens    time.Duration
	grants    time.Duration

	samples   []revSample
	lastPrune time.Time
	entries   prometheus.Gauge
	nodes     prometheus.Gauge
}

var _ maintenanceStore = store.Store(nil)

func newMaintenance(cfg Config, st maintenanceStore, log *slog.Logger) *maintenance {
	gauge := func(name, help string) prometheus.Gauge {
		return telemetry.RegisterOrExisting(cfg.Metrics, prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: "server", Name: name, Help: help,
		}))
	}
	return &maintenance{
		st: st, clock: cfg.Clock, log: log.With(telemetry.Component, "maintenance"),
		every: cfg.MaintenanceEvery, tombstone: cfg.TombstoneRetention, ledger: cfg.LedgerRetention, tokens: cfg.TokenRetention,
		grants:  cfg.Grants.Retention,
		entries: gauge("entries", "Registration entries in the store."),
		nodes:   gauge("nodes", "Attested nodes in the store."),
	}
}

// run refreshes the gauges every gaugeEvery and prunes every m.every until
// ctx ends. Failures are logged and retried on the next tick: none of this
// work is urgent.
func (m *maintenance) run(ctx context.Context) error {
	t := time.NewTicker(min(gaugeEvery, m.every))
	defer t.Stop()
	for {
		m.tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (m *maintenance) tick(ctx context.Context) {
	m.updateGauges(ctx)
	now := m.clock.Now()
	if !m.lastPrune.IsZero() && now.Sub(m.lastPrune) < m.every {
		return
	}
	m.lastPrune = now
	m.prune(ctx, now)
}

func (m *maintenance) updateGauges(ctx context.Context) {
	if n, err := m.st.CountEntries(ctx); err == nil {
		m.entries.Set(float64(n))
	} else if ctx.Err() == nil {
		m.log.Warn("count entries", telemetry.Error, err.Error())
	}
	if n, err := m.st.CountNodes(ctx); err == nil {
		m.nodes.Set(float64(n))
	} else if ctx.Err() == nil {
		m.log.Warn("count nodes", telemetry.Error, err.Error())
	}
}

func (m *maintenance) prune(ctx context.Context, now time.Time) {
	if n, err := m.st.PruneJoinTokens(ctx, now.Add(-m.tokens)); err != nil {
		m.warn(ctx, "prune join tokens", err)
	} else if n > 0 {
		m.log.Info("pruned expired join tokens", telemetry.Count, n)
	}
	if n, err := m.st.PruneIssued(ctx, now.Add(-m.ledger)); err != nil {
		m.warn(ctx, "prune ledger", err)
	} else if n > 0 {
		m.log.Info("pruned expired ledger rows", telemetry.Count, n)
	}
	if n, err := m.st.PruneGrants(ctx, now.Add(-m.grants)); err != nil {
		m.warn(ctx, "prune grants", err)
	} else if n > 0 {
		m.log.Info("pruned ended grants", telemetry.Count, n)
	}
	rev, err := m.st.Revision(ctx)
	if err != nil {
		m.warn(ctx, "read revision", err)
		return
	}
	m.samples = append(m.samples, revSample{at: now, rev: rev})
	if before := m.pruneBefore(now); before > 0 {
		if err := m.st.PruneTombstones(ctx, before); err != nil {
			m.warn(ctx, "prune tombstones", err)
		}
	}
}

// pruneBefore returns the newest sampled revision at least the retention
// old (0 if none) and forgets the samples older than it.
func (m *maintenance) pruneBefore(now time.Time) int64 {
	cut := now.Add(-m.tombstone)
	i := 0
	for i < len(m.samples) && !m.samples[i].at.After(cut) {
		i++
	}
	if i == 0 {
		return 0
	}
	rev := m.samples[i-1].rev
	m.samples = m.samples[i-1:]
	return rev
}

func (m *maintenance) warn(ctx context.Context, op string, err error) {
	if ctx.Err() == nil {
		m.log.Warn(op, telemetry.Error, err.Error())
	}
}
