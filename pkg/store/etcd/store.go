// Package etcd is the etcd v3 backend of the nhid-server store: the same
// store.Store contract as store/bolt, on a cluster several servers share,
// so that no server is a single point of failure.
//
// Every multi-key write is one etcd transaction whose comparisons on
// revisions and existence make it atomic against every other server;
// read-modify-write calls retry on conflict. Sync revisions are derived
// from etcd's own (see revision.go), so they are global: an agent may
// resume through any server. Deletions leave tombstone keys, pruned by
// PruneTombstones, rather than relying on etcd's history, which operators
// compact on their own schedule. Watch runs one etcd watch per Store and
// fans its events out, in revision order, to local watchers.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
)

// Defaults of Config.
const (
	DefaultPrefix         = "/nhid/"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultWatchBuffer    = 4096
)

// maxMessageBytes bounds what the client sends and receives in one call.
// etcd's own limit (--max-request-bytes) must be raised to match for large
// entry batches; see docs/ha.md.
const maxMessageBytes = 32 << 20

var _ store.Store = (*Store)(nil)

// Config configures Open.
type Config struct {
	// Endpoints are the etcd client URLs (https://host:2379). Required.
	Endpoints []string
	// Prefix keeps this store's keys apart from anything else in the
	// cluster; it must end in "/". Default "/nhid/".
	Prefix string
	// TLS secures the connection; required for https endpoints.
	TLS TLSFiles
	// Username and Password authenticate to etcd when it has auth enabled.
	Username, Password string
	// DialTimeout bounds the first connection; default 5s.
	DialTimeout time.Duration
	// RequestTimeout bounds every etcd request, so that a cluster without
	// quorum fails calls with store.ErrUnavailable instead of hanging;
	// default 5s.
	RequestTimeout time.Duration
	// WatchBuffer is the number of events a watcher may fall behind before
	// it is dropped. Default 4096.
	WatchBuffer int
	// LeaseTTL is how long a server elected by Lead keeps the leadership
	// after it stopped renewing it (whole seconds); default 10s.
	LeaseTTL time.Duration
	// Log receives warnings (dropped watchers, watch restarts).
	Log *slog.Logger
	// Clock stamps created_at on new entries and grants.
	Clock clock.Clock
}

// Store is the etcd implementation of store.Store. It is safe for
// concurrent use.
type Store struct {
	cfg    Config
	client *clientv3.Client
	keys   keys
	log    *slog.Logger
	clock  clock.Clock

	hub *hub
	// stopClient ends the client's context: calls that etcd's client
	// makes with it (a cancelled campaign's resignation) end too.
	stopClient context.CancelFunc
	closed     atomic.Bool
	done       chan struct{}
	wg         sync.WaitGroup
}

// withDefaults checks cfg, reporting every problem at once, and fills in
// the defaults.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	if len(cfg.Endpoints) == 0 {
		errs = append(errs, errors.New("endpoints: at least one is required"))
	}
	for i, ep := range cfg.Endpoints {
		if strings.TrimSpace(ep) == "" {
			errs = append(errs, fmt.Errorf("endpoints[%d]: empty", i))
		}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		errs = append(errs, fmt.Errorf("prefix %q: must end in /", cfg.Prefix))
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"dial_timeout", &cfg.DialTimeout, DefaultDialTimeout},
		{"request_timeout", &cfg.RequestTimeout, DefaultRequestTimeout},
		{"lease_ttl", &cfg.LeaseTTL, DefaultLeaseTTL},
	} {
		switch {
		case *d.v < 0:
			errs = append(errs, fmt.Errorf("%s %v: negative", d.name, *d.v))
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if cfg.LeaseTTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("lease_ttl %v: must be whole seconds", cfg.LeaseTTL))
	}
	switch {
	case cfg.WatchBuffer < 0:
		errs = append(errs, fmt.Errorf("watch buffer %d: negative", cfg.WatchBuffer))
	case cfg.WatchBuffer == 0:
		cfg.WatchBuffer = DefaultWatchBuffer
	}
	if err := cfg.TLS.check(); err != nil {
		errs = append(errs, err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	return cfg, errors.Join(errs...)
}

// Open connects to etcd, checks that it answers and that the prefix holds
// a layout this binary understands (writing the layout version on first
// use). ctx bounds the connection attempt.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	tlsConf, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	clientCtx, stopClient := context.WithCancel(context.Background())
	client, err := clientv3.New(clientv3.Config{
		Endpoints:          cfg.Endpoints,
		DialTimeout:        cfg.DialTimeout,
		TLS:                tlsConf,
		Username:           cfg.Username,
		Password:           cfg.Password,
		MaxCallSendMsgSize: maxMessageBytes,
		MaxCallRecvMsgSize: maxMessageBytes,
		// Keepalives notice a dead member quickly, so the client moves to
		// another one instead of waiting on a half-open connection.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		PermitWithoutStream:  true,
		Logger:               zap.NewNop(),
		Context:              clientCtx,
	})
	if err != nil {
		stopClient()
		return nil, fmt.Errorf("open etcd store at %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	s := &Store{
		cfg: cfg, client: client, keys: keys{prefix: cfg.Prefix}, stopClient: stopClient,
		log: cfg.Log, clock: cfg.Clock, done: make(chan struct{}),
	}
	s.hub = newHub(s)
	if err := s.initSchema(ctx); err != nil {
		stopClient()
		_ = client.Close()
		return nil, fmt.Errorf("open etcd store at %s (prefix %q): %w", strings.Join(cfg.Endpoints, ","), cfg.Prefix, err)
	}
	return s, nil
}

// initSchema writes the layout version under a fresh prefix, or checks the
// one found.
func (s *Store) initSchema(ctx context.Context) error {
	resp, err := s.txn(ctx, "check layout version",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.keys.schema()), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(s.keys.schema(), schemaVersion)},
		[]clientv3.Op{clientv3.OpGet(s.keys.schema())})
	if err != nil {
		return err
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 || string(kvs[0].Value) != schemaVersion {
		var got string
		if len(kvs) > 0 {
			got = string(kvs[0].Value)
		}
		return fmt.Errorf("store layout version %q is not supported (want %q)", got, schemaVersion)
	}
	return nil
}

// Close ends every watcher and the background watch, and closes the
// connection. Calls in flight finish or fail with store.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.done)
	s.hub.close()
	s.stopClient()
	s.wg.Wait()
	if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd store: %w", err)
	}
	return nil
}

// Revision returns the current sync revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	resp, err := s.get(ctx, "read revision", s.keys.revision())
	if err != nil {
		return 0, err
	}
	return markerRevision(first(resp.Kvs))
}
