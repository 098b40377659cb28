// Package auditlog is the writer of the audit trail: Log takes audit events
// from every component (audit.Recorder), links them into the hash chain
// and appends them to the store in batches from one goroutine, signs
// checkpoints with the server's key, and streams what it committed to an
// optional sink as JSON lines. pkg/audit owns the formats and the
// verification.
package auditlog

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Defaults of Config.
const (
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = time.Minute
	DefaultBuffer             = 16384
	DefaultMaxBatch           = 4096
	DefaultBlockTimeout       = 500 * time.Millisecond
	DefaultStopTimeout        = 10 * time.Second
	DefaultLinger             = 10 * time.Millisecond
)

// Bounds of what one record may hold, so that no event can make a batch
// too large for the store (etcd refuses requests over 1.5 MiB by default).
const (
	maxFieldBytes   = 4 << 10
	maxDetailsBytes = 16 << 10
	maxBatchBytes   = 1 << 20
)

// logSeq is the log key of a record's seq.
const logSeq = "seq"

// ErrStopped is returned by Flush once the log has stopped.
var ErrStopped = errors.New("audit log stopped")

// Config configures a Log.
type Config struct {
	// Store persists the chain. Required.
	Store store.AuditStore
	// KeyFile is the checkpoint signing key (PKCS#8 PEM, ECDSA P-256),
	// created 0600 in a 0700 directory if missing. Required.
	KeyFile string
	// Server names this server in records and checkpoints.
	Server string
	// CheckpointEvery signs a checkpoint once this server appended this
	// many records since its last one; default 1000.
	CheckpointEvery int
	// CheckpointInterval signs a checkpoint this often when this server
	// appended anything since its last one; default 1 minute.
	CheckpointInterval time.Duration
	// Buffer is how many records may wait to be appended; default 16384.
	Buffer int
	// MaxBatch is the most records one append carries; default 4096.
	MaxBatch int
	// Linger is how long the writer waits, after the first record of a
	// batch, for more before it commits; default 10ms. A commit costs a
	// disk sync that the store's other writes (a grant, an entry) queue
	// behind, so fewer, larger batches keep those writes' tail latency
	// down; the price is that a crash loses up to Linger more of the
	// newest records. A flush or a full batch commits at once.
	Linger time.Duration
	// BlockTimeout is how long Record waits for room in a full buffer
	// before it drops the record (counted and logged); default 500ms.
	BlockTimeout time.Duration
	// StopTimeout bounds the final flush when Run's context ends;
	// default 10s.
	StopTimeout time.Duration
	// Sink, if set, receives every committed record and checkpoint as a
	// JSON line (audit.MarshalLine), for a SIEM.
	Sink io.Writer
	Log  *slog.Logger
	// Metrics receives the audit collectors; none if nil.
	Metrics prometheus.Registerer
	// Clock stamps records and checkpoints.
	Clock clock.Clock
}

// item is one queued record, or a flush marker (done set).
type item struct {
	rec    *typesv1.AuditRecord
	queued time.Time
	done   chan struct{}
}

// Log is the audit log writer. Record is safe for concurrent use; Run
// must run for records to be appended.
type Log struct {
	cfg     Config
	log     *slog.Logger
	clock   clock.Clock
	m       *metrics
	key     *ecdsa.PrivateKey
	pubDER  []byte
	keyID   string
	ch      chan item
	running atomic.Bool
	// closed stops new records once Run's final flush began; inflight
	// counts Record calls between their closed check and their enqueue,
	// which the final flush waits for.
	closed   atomic.Bool
	inflight atomic.Int64

	mu        sync.Mutex
	committed store.AuditHead // the newest head this server appended
	lastDrop  time.Time       // rate limit of drop logs

	// Writer state, owned by Run's goroutine.
	sinceCheckpoint int
	warnedAt        time.Time
}

// New checks cfg, loads or creates the checkpoint key, and queues the
// audit.key record announcing it.
func New(cfg Config) (*Log, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	key, created, err := loadOrCreateKey(cfg.KeyFile, cfg.Log)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("audit key: encode public key: %w", err)
	}
	l := &Log{cfg: cfg, log: cfg.Log, clock: cfg.Clock, key: key, pubDER: der, keyID: audit.KeyID(der), ch: make(chan item, cfg.Buffer)}
	l.m = newMetrics(cfg.Metrics, func() float64 { return float64(len(l.ch)) })
	reason := "server started"
	if created {
		reason = "server started with a new checkpoint key"
	}
	l.log.Info("audit checkpoint key", telemetry.KeyID, l.keyID, telemetry.Path, cfg.KeyFile, "created", created)
	l.Record(context.Background(), audit.AnnounceKey(der, reason))
	return l, nil
}

func (cfg *Config) setDefaults() error {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("Store is required"))
	}
	if cfg.KeyFile == "" {
		errs = append(errs, errors.New("KeyFile is required"))
	}
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"CheckpointEvery", &cfg.CheckpointEvery, DefaultCheckpointEvery},
		{"Buffer", &cfg.Buffer, DefaultBuffer},
		{"MaxBatch", &cfg.MaxBatch, DefaultMaxBatch},
	}
	for _, f := range ints {
		switch {
		case *f.v < 0:
			errs = append(errs, fmt.Errorf("%s %d is negative", f.name, *f.v))
		case *f.v == 0:
			*f.v = f.def
		}
	}
	durs := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"CheckpointInterval", &cfg.CheckpointInterval, DefaultCheckpointInterval},
		{"BlockTimeout", &cfg.BlockTimeout, DefaultBlockTimeout},
		{"StopTimeout", &cfg.StopTimeout, DefaultStopTimeout},
		{"Linger", &cfg.Linger, DefaultLinger},
	}
	for _, d := range durs {
		switch {
		case *d.v < 0:
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, *d.v))
		case *d.v == 0:
			*d.v = d.def
		}
	}
	cfg.Log = telemetry.OrDiscard(cfg.Log)
	cfg.Clock = clock.OrReal(cfg.Clock)
	return errors.Join(errs...)
}

// KeyID is the id of this server's checkpoint key.
func (l *Log) KeyID() string { return l.keyID }

// TrustedKeys returns this server's checkpoint public key (PKIX DER), as
// held in memory: what GetAuditHead reports to verifiers.
func (l *Log) TrustedKeys() [][]byte { return [][]byte{bytes.Clone(l.pubDER)} }

// Record queues ev. It waits at most BlockTimeout for room in the buffer;
// a record that finds none, or arrives after the log stopped, is dropped,
// counted and logged. ctx is not used to cancel: a record of a call whose
// client went away still matters.
func (l *Log) Record(_ context.Context, ev audit.Event) {
	r := l.toRecord(ev)
	l.inflight.Add(1)
	defer l.inflight.Add(-1)
	if l.closed.Load() {
		l.drop(r, dropStopped)
		return
	}
	it := item{rec: r, queued: time.Now()}
	select {
	case l.ch <- it:
		return
	default:
	}
	l.m.blocked.Inc()
	t := time.NewTimer(l.cfg.BlockTimeout)
	defer t.Stop()
	select {
	case l.ch <- it:
	case <-t.C:
		l.drop(r, dropBufferFull)
	}
}

// toRecord builds the record of ev, bounding and cleaning its fields.
func (l *Log) toRecord(ev audit.Event) *typesv1.AuditRecord {
	return &typesv1.AuditRecord{
		Time: l.clock.Now().UnixNano(), Server: clean(l.cfg.Server, maxFieldBytes),
		Actor: clean(ev.Actor, maxFieldBytes), OnBehalfOf: clean(ev.OnBehalfOf, maxFieldBytes),
		Action: clean(ev.Action, maxFieldBytes), Target: clean(ev.Target, maxFieldBytes),
		Outcome: clean(ev.Outcome, maxFieldBytes), Reason: clean(ev.Reason, maxFieldBytes),
		Details: encodeDetails(ev.Details),
	}
}

// clean makes s valid UTF-8 (protobuf strings must be) of at most max
// bytes, cut at a rune boundary.
func clean(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// encodeDetails is details as a compact JSON object without HTML escapes
// (map keys sorted, so equal details encode equally), or a stand-in saying
// why it is not.
func encodeDetails(d map[string]any) string {
	if len(d) == 0 {
		return ""
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return `{"error":"details are not JSON-encodable"}`
	}
	out := strings.ToValidUTF8(strings.TrimSuffix(buf.String(), "\n"), "\uFFFD")
	if len(out) > maxDetailsBytes {
		return fmt.Sprintf(`{"truncated":true,"bytes":%d}`, len(out))
	}
	return out
}

// drop counts a lost record and logs it, at most once a second.
func (l *Log) drop(r *typesv1.AuditRecord, reason string) {
	l.m.dropped.WithLabelValues(reason).Inc()
	l.mu.Lock()
	now := time.Now()
	loud := now.Sub(l.lastDrop) >= time.Second
	if loud {
		l.lastDrop = now
	}
	l.mu.Unlock()
	if loud {
		l.log.Error("AUDIT RECORD LOST: the audit trail is incomplete (see nhid_audit_records_dropped_total)",
			telemetry.Reason, reason, "action", r.GetAction(), "target", r.GetTarget(), "actor", r.GetActor())
	}
}

// Flush waits until every record queued before it was called is appended
// (or dropped), or ctx ends.
func (l *Log) Flush(ctx context.Context) error {
	it := item{done: make(chan struct{})}
	l.inflight.Add(1)
	if l.closed.Load() {
		l.inflight.Add(-1)
		return ErrStopped
	}
	select {
	case l.ch <- it:
		l.inflight.Add(-1)
	case <-ctx.Done():
		l.inflight.Add(-1)
		return fmt.Errorf("audit flush: %w", ctx.Err())
	}
	select {
	case <-it.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit flush: %w", ctx.Err())
	}
}

// AuditHead returns the chain's head as the store has it, unless this
// server appended beyond it: then the store lost records (it was rolled
// back or truncated) and the head this server committed is returned, so
// that a verifier reports the missing records.
func (l *Log) AuditHead(ctx context.Context) (store.AuditHead, error) {
	h, err := l.cfg.Store.AuditHead(ctx)
	if err != nil {
		return h, err
	}
	l.mu.Lock()
	mine := l.committed
	l.mu.Unlock()
	if mine.Seq > h.Seq {
		l.log.Error("the audit store's head is behind records this server appended: the log was truncated or rolled back",
			logSeq, h.Seq, "committed_seq", mine.Seq)
		return store.AuditHead{Seq: mine.Seq, Hash: bytes.Clone(mine.Hash)}, nil
	}
	return h, nil
}

// ListAudit reads records from the store.
func (l *Log) ListAudit(ctx context.Context, req store.ListAuditRequest) ([]*typesv1.AuditRecord, error) {
	return l.cfg.Store.ListAudit(ctx, req)
}

// ListAuditCheckpoints reads checkpoints from the store.
func (l *Log) ListAuditCheckpoints(ctx context.Context, fromSeq uint64, limit int) ([]*typesv1.AuditCheckpoint, error) {
	return l.cfg.Store.ListAuditCheckpoints(ctx, fromSeq, limit)
}
