// Package agentcache is nhid-agent's on-disk cache: one bbolt file holding
// the registration entries synced from the server, the sync revision they
// were read at, the trust bundle, the bundles of federated trust domains,
// and the X.509-SVIDs minted for the entries
// together with their private keys. It lets a restarted agent serve
// still-valid SVIDs at once, even while the server is unreachable, and
// resume the sync from where it stopped.
//
// The file holds workload private keys, so it is created 0600 and a looser
// mode found on open is tightened. Every write is one transaction: a crash
// leaves the cache at the state before or after a change, never between.
package agentcache

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/nhid/nhid/pkg/telemetry"
)

// FileName is the cache file's name inside the agent's data directory.
const FileName = "cache.db"

// DefaultOpenTimeout bounds the wait for the file lock.
const DefaultOpenTimeout = 2 * time.Second

// schemaVersion is the on-disk layout version; Open refuses other versions
// so that an older agent never misreads a newer file.
const schemaVersion = 1

// ErrCorrupt marks a record the cache cannot decode. Load reports the
// first one with its bucket and key instead of skipping it, so the agent
// decides (it resets the cache and syncs afresh) and the operator is told.
var ErrCorrupt = errors.New("corrupt cache record")

// ErrClosed is returned by every method after Close.
var ErrClosed = errors.New("cache closed")

var (
	bucketMeta    = []byte("meta")
	bucketEntries = []byte("entries") // entry id → typesv1.Entry
	bucketSVIDs   = []byte("svids")   // entry id → svid record (see record.go)
	// bucketFederated was added within schema 1: an older agent opening the
	// file ignores it, and Open creates it in an older file.
	bucketFederated = []byte("federated") // trust domain name → typesv1.Bundle

	allBuckets = [][]byte{bucketMeta, bucketEntries, bucketSVIDs, bucketFederated}

	metaSchema   = []byte("schema")
	metaRevision = []byte("revision")
	metaBundle   = []byte("bundle") // typesv1.Bundle
)

// Options configures Open. The zero value is usable.
type Options struct {
	// Log receives a warning when the file's mode had to be tightened.
	Log *slog.Logger
	// OpenTimeout bounds the wait for the file lock, so that a second agent
	// on the same data dir fails clearly instead of hanging. Default 2s.
	OpenTimeout time.Duration
}

// Cache is the agent's on-disk cache. It is safe for concurrent use.
type Cache struct {
	db   *bbolt.DB
	path string
}

// Open opens or creates the cache file at path. The parent directory must
// exist.
func Open(path string, opts Options) (*Cache, error) {
	if path == "" {
		return nil, errors.New("open agent cache: path is empty")
	}
	if opts.OpenTimeout < 0 {
		return nil, fmt.Errorf("open agent cache %s: open timeout %v is negative", path, opts.OpenTimeout)
	}
	if opts.OpenTimeout == 0 {
		opts.OpenTimeout = DefaultOpenTimeout
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := tightenMode(path, log); err != nil {
		return nil, err
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.OpenTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open agent cache %s: file is locked after %v: another nhid-agent may be using the data dir", path, opts.OpenTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open agent cache %s: %w", path, err)
	}
	if err := db.Update(initSchema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open agent cache %s: %w", path, err)
	}
	return &Cache{db: db, path: path}, nil
}

// tightenMode makes an existing cache file 0600: it holds private keys.
func tightenMode(path string, log *slog.Logger) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open agent cache %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("open agent cache %s: restrict mode %v to 0600: %w", path, perm, err)
		}
		log.Warn("agent cache file was accessible to group or others; changed its mode to 0600",
			telemetry.Path, path, "mode", perm.String())
	}
	return nil
}

func initSchema(tx *bbolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(metaSchema)
	if v == nil {
		return meta.Put(metaSchema, encodeInt64(schemaVersion))
	}
	got, err := decodeInt64(v)
	if err != nil {
		return fmt.Errorf("meta/schema: %w", err)
	}
	if got != schemaVersion {
		return fmt.Errorf("cache schema version %d is not supported (want %d); move the file away to start afresh", got, schemaVersion)
	}
	return nil
}

// Path is the file the cache lives in.
func (c *Cache) Path() string { return c.path }

// Close releases the file. Calling it again is harmless.
func (c *Cache) Close() error {
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("close agent cache %s: %w", c.path, err)
	}
	return nil
}

// Reset empties the cache: entries, revision, bundle, federated bundles and
// SVIDs. The agent uses it when Load reports a corrupt record, then syncs
// from scratch.
func (c *Cache) Reset() error {
	return c.update("reset", func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketEntries, bucketSVIDs, bucketFederated} {
			if err := tx.DeleteBucket(name); err != nil {
				return fmt.Errorf("drop bucket %s: %w", name, err)
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Delete(metaRevision); err != nil {
			return err
		}
		return meta.Delete(metaBundle)
	})
}

func (c *Cache) update(op string, fn func(tx *bbolt.Tx) error) error {
	if err := c.db.Update(fn); err != nil {
		return c.wrap(op, err)
	}
	return nil
}

func (c *Cache) view(op string, fn func(tx *bbolt.Tx) error) error {
	if err := c.db.View(fn); err != nil {
		return c.wrap(op, err)
	}
	return nil
}

func (c *Cache) wrap(op string, err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("agent cache %s: %w", op, ErrClosed)
	}
	return fmt.Errorf("agent cache %s %s: %w", c.path, op, err)
}
