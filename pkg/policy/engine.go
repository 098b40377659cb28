package policy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/telemetry"
)

// logKeyRule is the log key of a policy rule's name. It belongs in
// pkg/telemetry's list; it lives here until that list gains it.
const logKeyRule = "rule"

// defaultPollInterval is how often Run looks for changed policy files.
const defaultPollInterval = time.Second

// Config configures an Engine.
type Config struct {
	// Path is a policy file or a directory of *.yaml policy files.
	Path string
	// Location is the zone of time.hour, time.minute, time.weekday and
	// time.date; nil is UTC.
	Location *time.Location
	Log      *slog.Logger
	// Clock gives the decision time when an Input leaves Now zero.
	Clock   clock.Clock
	Metrics prometheus.Registerer
}

// Engine holds the policy in force and decides with it. It reloads the
// policy when told to (Reload) or when its files change (Run); a policy
// that fails to load never replaces the one in force. It is safe for
// concurrent use.
type Engine struct {
	path    string
	loc     *time.Location
	log     *slog.Logger
	clock   clock.Clock
	metrics *metrics
	set     atomic.Pointer[Set]

	// reloadMu serialises loads and guards the fingerprints. lastSum is
	// what the last load saw, good or bad, so Run tries (and logs) a change
	// once; pendingSum is a change Run has seen once and waits to see
	// again, so that it does not load files halfway through being written.
	reloadMu   sync.Mutex
	lastSum    [sha256.Size]byte
	pendingSum [sha256.Size]byte

	// pollInterval is a test seam.
	pollInterval time.Duration
}

// New loads and compiles the policy at cfg.Path. The error of a policy with
// problems lists every one of them with its file, line and column.
func New(cfg Config) (*Engine, error) {
	if cfg.Path == "" {
		return nil, errors.New("policy: Config.Path is required")
	}
	e := &Engine{
		path:         cfg.Path,
		loc:          cfg.Location,
		log:          telemetry.OrDiscard(cfg.Log).With(telemetry.Component, "policy"),
		clock:        clock.OrReal(cfg.Clock),
		metrics:      newMetrics(cfg.Metrics),
		pollInterval: defaultPollInterval,
	}
	if e.loc == nil {
		e.loc = time.UTC
	}
	files, err := readFiles(cfg.Path)
	if err != nil {
		return nil, err
	}
	set, err := Compile(files)
	if err != nil {
		return nil, fmt.Errorf("policy %s:\n%w", cfg.Path, err)
	}
	e.install(set, fingerprint(files))
	e.log.Info("policy loaded", telemetry.Path, cfg.Path, telemetry.Count, len(set.rules))
	return e, nil
}

// Rules returns the names of the rules in force, in evaluation order.
func (e *Engine) Rules() []string { return e.set.Load().Rules() }

// Reload loads the policy again now, as on SIGHUP. If the new policy does
// not load, the error is logged and returned and the rules in force stay.
func (e *Engine) Reload() error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	return e.reload(true)
}

// Run watches the policy files until ctx ends; then it returns nil. It
// reads them every second and reloads once a change has stayed the same
// for two reads in a row, so that a file being written, or a directory
// being updated file by file, is not loaded halfway. Failed reloads are
// logged once per distinct content and leave the rules in force.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.reloadMu.Lock()
			_ = e.reload(false) // logged by reload
			e.reloadMu.Unlock()
		}
	}
}

// reload loads the policy. Unless force is set, it does nothing when the
// files are as the last load saw them or have changed since the previous
// call. The caller holds reloadMu.
func (e *Engine) reload(force bool) error {
	files, err := readFiles(e.path)
	var sum [sha256.Size]byte
	if err != nil {
		sum = sha256.Sum256([]byte("error: " + err.Error()))
	} else {
		sum = fingerprint(files)
	}
	if !force {
		settled := sum == e.pendingSum
		e.pendingSum = sum
		if sum == e.lastSum || !settled {
			return nil
		}
	}
	e.lastSum = sum
	var set *Set
	if err == nil {
		set, err = Compile(files)
	}
	if err != nil {
		err = fmt.Errorf("policy %s:\n%w", e.path, err)
		e.metrics.reloads.WithLabelValues("error").Inc()
		e.log.Error("policy reload failed; the rules in force stay", telemetry.Path, e.path, telemetry.Error, err)
		return err
	}
	e.install(set, sum)
	e.metrics.reloads.WithLabelValues("ok").Inc()
	e.log.Info("policy reloaded", telemetry.Path, e.path, telemetry.Count, len(set.rules))
	return nil
}

func (e *Engine) install(set *Set, sum [sha256.Size]byte) {
	e.set.Store(set)
	e.lastSum, e.pendingSum = sum, sum
	e.metrics.rules.Set(float64(len(set.rules)))
}

// Decide decides in with the rules in force; a zero in.Now is taken from
// the engine's clock. It fails closed: an invalid input or a rule that
// cannot be evaluated denies, and is logged with the rule's name.
func (e *Engine) Decide(ctx context.Context, in Input) Decision {
	start := time.Now()
	if in.Now.IsZero() {
		in.Now = e.clock.Now()
	}
	d, err := e.set.Load().decide(ctx, in, e.loc)
	e.metrics.duration.Observe(time.Since(start).Seconds())
	e.metrics.decisions.WithLabelValues(d.Effect.String(), d.Rule).Inc()
	if err != nil {
		e.metrics.errors.WithLabelValues(d.Rule).Inc()
		telemetry.Logger(ctx, e.log).Warn("policy evaluation failed; denying",
			logKeyRule, d.Rule, telemetry.SPIFFEID, in.Subject.SPIFFEID,
			telemetry.EntryID, in.Subject.EntryID, telemetry.Error, err)
	}
	return d
}
