// Package bolt is the embedded bbolt backend of the nhid-server store: one
// crash-safe file holding entries (with parent, selector, SPIFFE ID and
// revision indexes), tombstones, nodes, join tokens, trust bundles and the
// SVID ledger, plus the in-process fan-out of committed changes to watchers.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/internal/fanout"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Defaults for Options.
const (
	DefaultOpenTimeout = 2 * time.Second
	DefaultWatchBuffer = 4096
)

// initialMmapSize reserves address space (not disk or memory) for the file
// to grow into. Growing past the mapping makes a commit wait for every open
// read transaction, and new reads queue behind it, so a long snapshot read
// would stall all writes; etcd does the same.
const initialMmapSize = 1 << 30

// schemaVersion is the on-disk layout version; Open refuses other versions so
// that an older binary never misreads a newer file.
const schemaVersion = 1

var _ store.Store = (*Store)(nil)

// Options configures Open. The zero value is usable.
type Options struct {
	// Log receives warnings (dropped watchers, loose file permissions).
	Log *slog.Logger
	// Clock stamps CreatedAt on new entries.
	Clock clock.Clock
	// OpenTimeout bounds the wait for the file lock, so that a second server
	// on the same data dir fails clearly instead of hanging. Default 2s.
	OpenTimeout time.Duration
	// WatchBuffer is the number of events a watcher may fall behind before
	// it is dropped. Default 4096.
	WatchBuffer int
}

// Store is the bbolt implementation of store.Store. It is safe for
// concurrent use.
type Store struct {
	db          *bbolt.DB
	path        string
	log         *slog.Logger
	clock       clock.Clock
	watchBuffer int

	// mu serialises writes together with the publication of their events,
	// so that every watcher sees events in commit (revision) order. It also
	// guards watchers and closed.
	mu       sync.Mutex
	watchers map[*fanout.Subscriber]struct{}
	closed   atomic.Bool
	done     chan struct{}
	wg       sync.WaitGroup

	// qmu guards the writes waiting for a commit and whether one of their
	// callers is committing (leading) them; see commit.
	qmu     sync.Mutex
	queue   []*writeReq
	leading bool
	commits atomic.Int64 // for tests
}

// withDefaults checks o and fills in the defaults.
func (o Options) withDefaults() (Options, error) {
	switch {
	case o.OpenTimeout < 0:
		return o, fmt.Errorf("open timeout %v is negative", o.OpenTimeout)
	case o.WatchBuffer < 0:
		return o, fmt.Errorf("watch buffer %d is negative", o.WatchBuffer)
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	if o.WatchBuffer == 0 {
		o.WatchBuffer = DefaultWatchBuffer
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Open opens or creates the store file at path (mode 0600; the parent
// directory must exist).
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("open store: path is empty")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// The freelist stays synced (NoFreelistSync off, unlike etcd): without
	// it bbolt rebuilds the freelist by scanning the whole file on every
	// rolled-back write transaction, and a write whose fn fails rolls back.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:         opts.OpenTimeout,
		FreelistType:    bbolt.FreelistMapType,
		InitialMmapSize: initialMmapSize,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: file is locked after %v: another nhid-server may be using the data dir", path, opts.OpenTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{
		db:          db,
		path:        path,
		log:         opts.Log,
		clock:       clock.OrReal(opts.Clock),
		watchBuffer: opts.WatchBuffer,
		watchers:    make(map[*fanout.Subscriber]struct{}),
		done:        make(chan struct{}),
	}
	if err := db.Update(initSchema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s.warnLoosePermissions()
	return s, nil
}

// warnLoosePermissions flags a pre-existing file others can read: it holds
// join-token hashes and the topology of every workload.
func (s *Store) warnLoosePermissions() {
	fi, err := os.Stat(s.path)
	if err != nil {
		return
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		s.log.Warn("store file is accessible to group or others; chmod 600 it",
			telemetry.Path, s.path, "mode", perm.String())
	}
}

// initSchema creates the buckets and checks the layout version.
func initSchema(tx *bbolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(metaSchema)
	if v == nil {
		return meta.Put(metaSchema, encodeUint64(schemaVersion))
	}
	got, err := decodeUint64(v)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if got != schemaVersion {
		return fmt.Errorf("store schema version %d is not supported (want %d)", got, schemaVersion)
	}
	return nil
}

// Close closes every watcher, waits for pending writes and closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed.Swap(true) {
		s.mu.Unlock()
		return nil
	}
	for w := range s.watchers {
		s.removeWatcherLocked(w)
	}
	close(s.done)
	s.mu.Unlock()
	s.wg.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// Revision returns the current global revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.view(ctx, "read revision", func(tx *bbolt.Tx) error {
		var err error
		rev, err = readRevision(tx)
		return err
	})
	return rev, err
}

// view runs fn in a read transaction after checking ctx and the store state.
func (s *Store) view(ctx context.Context, op string, fn func(tx *bbolt.Tx) error) error {
	if err := s.check(ctx, op); err != nil {
		return err
	}
	if err := s.db.View(fn); err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// update runs fn in a write transaction and, once it has committed,
// publishes the events fn recorded. fn must not keep references to the
// writer after returning. Writes that arrive while a commit is in progress
// share the next one (see commitQueued), and when one of them fails they
// all run again alone: fn may run more than once, so it must set, never
// accumulate into, variables outside it.
func (s *Store) update(ctx context.Context, op string, fn func(w *writeTx) error) error {
	if err := s.check(ctx, op); err != nil {
		return err
	}
	r := &writeReq{ctx: ctx, fn: fn, wake: make(chan struct{})}
	s.qmu.Lock()
	s.queue = append(s.queue, r)
	lead := !s.leading
	s.leading = true
	s.qmu.Unlock()
	if !lead {
		<-r.wake
	}
	if lead || r.lead {
		s.commitQueued()
	}
	if r.err != nil {
		return s.wrap(op, r.err)
	}
	return nil
}

// check fails fast on a cancelled context or a closed store.
func (s *Store) check(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// wrap adds the operation to err and turns bbolt's closed-database error
// into store.ErrClosed.
func (s *Store) wrap(op string, err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%s: %w", op, store.ErrClosed)
	}
	return fmt.Errorf("%s: %w", op, err)
}
