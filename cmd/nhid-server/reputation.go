package main

import (
	"math"
	"slices"
	"time"

	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/server"
)

// Bounds of the reputation settings, checked here so that a mistake
// names its setting.
const (
	maxHalfLife         = 365 * 24 * time.Hour
	maxReportsPerMinute = 6000
	maxReportBurst      = 1000
)

// reputationSettings tune scores (docs/reputation.md). Every value left
// out takes pkg/reputation's default.
type reputationSettings struct {
	// Enabled: scores are tracked unless this is false.
	Enabled       *bool   `yaml:"enabled"`
	Baseline      float64 `yaml:"baseline"`
	HalfLife      string  `yaml:"half_life"`
	AlertBelow    float64 `yaml:"alert_below"`
	RestrictBelow float64 `yaml:"restrict_below"`
	// Weights maps event kinds to the points they add (negative: take).
	Weights   map[string]float64 `yaml:"weights"`
	MaxEvents int                `yaml:"max_events"`
	// ReportRate is the misuse reports per minute each relying party may
	// send; ReportBurst how many at once.
	ReportRate  float64 `yaml:"report_rate"`
	ReportBurst int     `yaml:"report_burst"`
}

// reputationConfig converts the reputation section.
func reputationConfig(errs *config.Errors, path string, r reputationSettings) server.ReputationConfig {
	out := server.ReputationConfig{
		Disabled: r.Enabled != nil && !*r.Enabled,
		HalfLife: ttl(errs, config.Join(path, "half_life"), r.HalfLife, reputation.MinHalfLife, maxHalfLife),
	}
	score := func(key string, v float64) float64 {
		if v != 0 && !(v > reputation.MinScore && v <= reputation.MaxScore) {
			errs.Addf(config.Join(path, key), "%v is not within 1 to %d", v, reputation.MaxScore)
			return 0
		}
		return v
	}
	out.Baseline = score("baseline", r.Baseline)
	out.AlertBelow = score("alert_below", r.AlertBelow)
	out.RestrictBelow = score("restrict_below", r.RestrictBelow)
	baseline, alert, restrict := orScore(out.Baseline, reputation.DefaultBaseline),
		orScore(out.AlertBelow, reputation.DefaultAlertBelow), orScore(out.RestrictBelow, reputation.DefaultRestrictBelow)
	if restrict >= alert {
		errs.Addf(config.Join(path, "restrict_below"), "%v must be below alert_below (%v)", restrict, alert)
	}
	if alert > baseline {
		errs.Addf(config.Join(path, "alert_below"), "%v is above the baseline %v: every identity would start alerted", alert, baseline)
	}
	out.Weights = weights(errs, config.Join(path, "weights"), r.Weights)
	out.MaxEvents = bounded(errs, config.Join(path, "max_events"), r.MaxEvents, reputation.MaxMaxEvents)
	if r.ReportRate < 0 || r.ReportRate > maxReportsPerMinute || math.IsNaN(r.ReportRate) {
		errs.Addf(config.Join(path, "report_rate"), "%v reports a minute is not within 0 to %d", r.ReportRate, maxReportsPerMinute)
	} else {
		out.ReportsPerMinute = r.ReportRate
	}
	out.ReportBurst = bounded(errs, config.Join(path, "report_burst"), r.ReportBurst, maxReportBurst)
	return out
}

func orScore(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

// bounded checks 0 ≤ v ≤ hi; 0 means the default.
func bounded(errs *config.Errors, path string, v, hi int) int {
	if v < 0 || v > hi {
		errs.Addf(path, "%d is not within 0 (the default) to %d", v, hi)
		return 0
	}
	return v
}

// weights checks every kind and weight.
func weights(errs *config.Errors, path string, in map[string]float64) map[reputation.Kind]float64 {
	if len(in) == 0 {
		return nil
	}
	known := reputation.Kinds()
	out := make(map[reputation.Kind]float64, len(in))
	for k, w := range in {
		kind := reputation.Kind(k)
		switch {
		case !slices.Contains(known, kind):
			errs.Addf(config.Join(path, k), "unknown event kind; kinds are %v", known)
		case math.IsNaN(w) || math.Abs(w) > reputation.MaxWeight:
			errs.Addf(config.Join(path, k), "%v is not within -%d to %d", w, reputation.MaxWeight, reputation.MaxWeight)
		default:
			out[kind] = w
		}
	}
	return out
}
