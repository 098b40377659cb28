package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Store kinds.
const (
	// StoreBolt keeps everything in DataDir/nhid.db: one server.
	StoreBolt = "bolt"
	// StoreEtcd keeps everything in an etcd cluster that several servers
	// share: no server is a single point of failure.
	StoreEtcd = "etcd"
)

// StoreConfig selects and configures the store.
type StoreConfig struct {
	// Kind is StoreBolt (the default) or StoreEtcd.
	Kind string
	// Etcd configures the etcd store (Kind StoreEtcd); its Log and Clock
	// are the server's.
	Etcd etcd.Config
}

// check validates the store settings.
func (c *StoreConfig) check() []error {
	switch c.Kind {
	case "":
		c.Kind = StoreBolt
	case StoreBolt:
	case StoreEtcd:
		if len(c.Etcd.Endpoints) == 0 {
			return []error{errors.New("server config: Store.Etcd.Endpoints: required with the etcd store")}
		}
	default:
		return []error{fmt.Errorf("server config: Store.Kind: %q is neither %s nor %s", c.Kind, StoreBolt, StoreEtcd)}
	}
	return nil
}

// openStore opens the configured store.
func (s *Server) openStore(ctx context.Context) (store.Store, error) {
	log := s.log.With(telemetry.Component, "store")
	if s.cfg.Store.Kind != StoreEtcd {
		return bolt.Open(filepath.Join(s.cfg.DataDir, "nhid.db"), bolt.Options{Log: log, Clock: s.cfg.Clock})
	}
	cfg := s.cfg.Store.Etcd
	cfg.Log, cfg.Clock = log, s.cfg.Clock
	st, err := etcd.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	log.Info("store opened on etcd", telemetry.Address, fmt.Sprint(cfg.Endpoints), "prefix", cfg.Prefix)
	return st, nil
}

// elector runs work on one server at a time among those sharing a store.
type elector interface {
	Lead(ctx context.Context, name, id string, fn func(ctx context.Context)) error
}

// runLeaderJobs runs the periodic jobs that act on the whole store
// (pruning, the gauges of its contents, expired authorities of any
// server), and extra ones (nil entries are skipped: the federation
// refresher): on this server alone with bbolt, on the one elected server
// with a shared store. They are all safe to run twice, which happens
// briefly when a leader is cut off from etcd.
func (s *Server) runLeaderJobs(ctx context.Context, st store.Store, extra ...func(context.Context) error) error {
	leader := telemetry.NewGauge(s.cfg.Metrics, "server", "maintenance_leader", "1 while this server runs the store-wide jobs (pruning, the entries and nodes gauges, federated bundle refreshes).")
	jobs := func(ctx context.Context) {
		leader.Set(1)
		defer leader.Set(0)
		g, ctx := errgroup.WithContext(ctx)
		g.Go(func() error { return newMaintenance(s.cfg, st, s.log).run(ctx) })
		g.Go(func() error { return newAuthorityPruner(s.cfg, st, s.log).run(ctx) })
		for _, job := range extra {
			if job != nil {
				g.Go(func() error { return job(ctx) })
			}
		}
		_ = g.Wait()
	}
	el, ok := st.(elector)
	if !ok {
		jobs(ctx)
		return nil
	}
	return el.Lead(ctx, "maintenance", instanceID(s.cfg.BindAddress), jobs)
}

// instanceID names this server in the election: host, process and agent
// API address, so that operators can tell who leads.
func instanceID(bind string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), bind)
}
