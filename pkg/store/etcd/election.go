package etcd

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/nhid/nhid/pkg/telemetry"
)

// DefaultLeaseTTL is how long an elected server that stopped answering
// (killed, partitioned) stays leader: the TTL of its etcd lease.
const DefaultLeaseTTL = 10 * time.Second

// electionBackoff paces new campaigns after a failure.
const electionBackoff = time.Second

// Lead runs fn whenever this process is the elected leader among every
// process calling Lead with the same name on the cluster, until ctx ends.
// fn's context ends when the leadership is lost: the process's etcd lease
// could not be renewed for its TTL (partition, lost quorum), or ctx ended;
// then Lead campaigns again. id names this process in the election key
// (for operators: etcdctl get --prefix <prefix>election/).
//
// A leader cut off from etcd learns it only when its lease runs out, by
// which time another may have been elected: for a moment two may lead.
// What fn does must therefore be safe to run twice; it is meant for work
// that only wastes effort when duplicated, such as pruning.
func (s *Store) Lead(ctx context.Context, name, id string, fn func(ctx context.Context)) error {
	for {
		if err := s.leadOnce(ctx, name, id, fn); err != nil && ctx.Err() == nil && !s.closed.Load() {
			s.log.Warn("leader election failed; campaigning again", telemetry.Component, name, telemetry.Error, err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			return nil
		case <-time.After(electionBackoff):
		}
	}
}

// leadOnce campaigns once and, if elected, runs fn until the leadership
// or ctx ends.
func (s *Store) leadOnce(ctx context.Context, name, id string, fn func(ctx context.Context)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	sess, err := concurrency.NewSession(s.client, concurrency.WithTTL(int(s.cfg.LeaseTTL/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("open election session: %w", err)
	}
	defer func() { _ = sess.Close() }()
	el := concurrency.NewElection(sess, s.keys.prefix+prefixElection+name)
	// A campaign cancelled while etcd has no quorum resigns with the
	// client's own context, which only Close ends: leave it behind rather
	// than hold up the caller's shutdown.
	campaign := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		campaign <- el.Campaign(ctx, id)
	}()
	select {
	case err := <-campaign:
		if err != nil {
			return fmt.Errorf("campaign: %w", err)
		}
	case <-ctx.Done():
		return nil
	}
	s.log.Info("elected to run the periodic jobs", telemetry.Component, name, "leader", id)
	lctx, stop := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
			stop()
		case <-lctx.Done():
		}
	}()
	fn(lctx)
	stop()
	if ctx.Err() == nil {
		s.log.Warn("lost the leadership of the periodic jobs", telemetry.Component, name, "leader", id)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer rcancel()
	// Resigning lets the next leader start at once; if etcd is unreachable
	// the lease runs out instead.
	_ = el.Resign(rctx)
	return nil
}
