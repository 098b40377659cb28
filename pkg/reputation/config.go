package reputation

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Score bounds and the defaults of Config.
const (
	MinScore = 0
	MaxScore = 1000

	DefaultBaseline      = 500
	DefaultHalfLife      = 24 * time.Hour
	DefaultAlertBelow    = 300
	DefaultRestrictBelow = 200
	DefaultMaxEvents     = 50

	// MaxWeight bounds the magnitude of a weight: one event can move a
	// score across the whole range, no further.
	MaxWeight = MaxScore
	// MaxMaxEvents bounds the events kept per subject, and so the size of
	// its record.
	MaxMaxEvents = 1000
	// MinHalfLife keeps decay from erasing events before anyone sees them.
	MinHalfLife = time.Minute
)

// Bounds of the text an event carries; longer input is refused.
const (
	MaxReasonBytes   = 1024
	MaxReporterBytes = 2048
	MaxGrantIDBytes  = 256
	MaxSPIFFEIDBytes = 2048
)

// weightedKinds are the kinds that carry a weight, in the order people
// read them; KindReset has none (it sets the baseline).
var weightedKinds = []Kind{
	KindGrantReleased, KindGrantDenied, KindApprovalRejected,
	KindMisuseReported, KindRateLimited, KindAttestationFailed,
}

// Kinds returns the event kinds that carry a weight (every kind but
// KindReset), for configuration checks and documentation.
func Kinds() []Kind { return slices.Clone(weightedKinds) }

// DefaultWeights returns the default weight of every kind: clean releases
// earn a little, denials cost more, and what people or relying parties
// report costs most.
func DefaultWeights() map[Kind]float64 {
	return map[Kind]float64{
		KindGrantReleased:     5,
		KindGrantDenied:       -20,
		KindApprovalRejected:  -50,
		KindMisuseReported:    -150,
		KindRateLimited:       -30,
		KindAttestationFailed: -25,
	}
}

// Store is where scores live; store.Store satisfies it.
type Store = store.ReputationStore

// Config configures the reputation service. Zero values take the
// defaults.
type Config struct {
	// Store keeps the scores. Required.
	Store Store
	// Baseline is where a new subject starts and where scores decay to;
	// default 500. It may not be below AlertBelow.
	Baseline float64
	// HalfLife is how long it takes a score to move halfway back to the
	// baseline; default 24h, at least 1m.
	HalfLife time.Duration
	// Weights overrides the weight of some kinds (DefaultWeights has the
	// rest); a weight is at most ±1000 and a kind must be one of Kinds.
	Weights map[Kind]float64
	// AlertBelow: a score that falls below it notifies the owner; default
	// 300.
	AlertBelow float64
	// RestrictBelow: a score below it restricts the subject (its grants
	// are revoked and every new grant needs approval); default 200. It
	// must be below AlertBelow.
	RestrictBelow float64
	// MaxEvents is how many recent events a subject's record keeps,
	// newest first; default 50, at most 1000.
	MaxEvents int
	// Notifier tells owners about threshold crossings; default
	// notify.Discard.
	Notifier notify.Notifier
	// Audit records every change; default audit.Discard.
	Audit audit.Recorder
	// Log defaults to discarding.
	Log *slog.Logger
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Metrics, if set, receives the nhid_reputation_* collectors.
	Metrics prometheus.Registerer
}

// Check reports every problem of cfg's settings as New would, except a
// missing Store: a configuration can be checked before the store is open.
func (cfg Config) Check() error {
	return cfg.setDefaults(false)
}

// setDefaults fills the zero values and reports every problem at once.
func (cfg *Config) setDefaults(needStore bool) error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("reputation config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if cfg.Store == nil && needStore {
		fail("Store", "required")
	}
	orDefault := func(v *float64, def float64) {
		if *v == 0 {
			*v = def
		}
	}
	orDefault(&cfg.Baseline, DefaultBaseline)
	orDefault(&cfg.AlertBelow, DefaultAlertBelow)
	orDefault(&cfg.RestrictBelow, DefaultRestrictBelow)
	for _, f := range []struct {
		name string
		v    float64
	}{{"Baseline", cfg.Baseline}, {"AlertBelow", cfg.AlertBelow}, {"RestrictBelow", cfg.RestrictBelow}} {
		if !(f.v > MinScore && f.v <= MaxScore) {
			fail(f.name, "%v is not within (%d, %d]", f.v, MinScore, MaxScore)
		}
	}
	if cfg.RestrictBelow >= cfg.AlertBelow {
		fail("RestrictBelow", "%v must be below AlertBelow (%v)", cfg.RestrictBelow, cfg.AlertBelow)
	}
	if cfg.AlertBelow > cfg.Baseline {
		fail("AlertBelow", "%v is above the baseline %v: every subject would start alerted", cfg.AlertBelow, cfg.Baseline)
	}
	switch {
	case cfg.HalfLife == 0:
		cfg.HalfLife = DefaultHalfLife
	case cfg.HalfLife < MinHalfLife:
		fail("HalfLife", "%v is shorter than %v", cfg.HalfLife, MinHalfLife)
	}
	switch {
	case cfg.MaxEvents == 0:
		cfg.MaxEvents = DefaultMaxEvents
	case cfg.MaxEvents < 0 || cfg.MaxEvents > MaxMaxEvents:
		fail("MaxEvents", "%d is not within 1 to %d", cfg.MaxEvents, MaxMaxEvents)
	}
	weights := DefaultWeights()
	for k, w := range cfg.Weights {
		if _, ok := weights[k]; !ok {
			fail("Weights", "unknown kind %q (kinds: %v)", k, weightedKinds)
			continue
		}
		if math.IsNaN(w) || math.Abs(w) > MaxWeight {
			fail(fmt.Sprintf("Weights[%s]", k), "%v is not within ±%d", w, MaxWeight)
			continue
		}
		weights[k] = w
	}
	cfg.Weights = weights
	cfg.Notifier = notify.OrDiscard(cfg.Notifier)
	cfg.Audit = audit.OrDiscard(cfg.Audit)
	cfg.Log = telemetry.OrDiscard(cfg.Log)
	cfg.Clock = clock.OrReal(cfg.Clock)
	return errors.Join(errs...)
}
