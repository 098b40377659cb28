package federation

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Outcomes of a refresh, the outcome label of refreshes_total.
const (
	outcomeUpdated   = "updated"
	outcomeUnchanged = "unchanged"
	outcomeFailed    = "failed"
)

type refreshMetrics struct {
	refreshes   *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
}

func newRefreshMetrics(reg prometheus.Registerer) refreshMetrics {
	m := refreshMetrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "federation", Name: "refreshes_total",
			Help: "Fetches of federated bundles from their endpoints by trust domain and outcome (updated, unchanged, failed).",
		}, []string{"trust_domain", "outcome"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: "federation", Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last successful fetch of a federated bundle, by trust domain.",
		}, []string{"trust_domain"}),
	}
	if reg != nil {
		m.refreshes = telemetry.RegisterOrExisting(reg, m.refreshes)
		m.lastSuccess = telemetry.RegisterOrExisting(reg, m.lastSuccess)
	}
	return m
}

// refresh fetches one relationship's bundle, checks it and stores it
// unless the stored one has the same content, so that watchers (and the
// agents behind them) are woken only by a real change. It returns the
// bundle now stored. With ProfileSPIFFE the endpoint is authenticated
// against the stored bundle, which the previous refresh updated: that is
// how a partner's CA rotation is followed, as long as it publishes the
// next authority before it uses it.
func (r *Refresher) refresh(ctx context.Context, st *relState) (*typesv1.Bundle, error) {
	rel := st.fetcher.rel
	td := rel.TrustDomain.Name()
	stored, outcome, err := r.fetchAndStore(ctx, st)
	if err != nil && ctx.Err() != nil {
		return nil, err // stopping (or losing the lead): not the partner's failure
	}
	r.metrics.refreshes.WithLabelValues(td, outcome).Inc()
	now := r.cfg.Clock.Now()
	st.mu.Lock()
	if err != nil {
		st.status.LastError = err.Error()
	} else {
		st.status.LastError, st.status.LastRefresh = "", now
	}
	st.mu.Unlock()
	if err != nil {
		r.log.Warn("federated bundle refresh failed; keeping the stored bundle",
			telemetry.TrustDomain, td, "profile", string(rel.Profile), telemetry.Error, err.Error())
		return nil, err
	}
	r.metrics.lastSuccess.WithLabelValues(td).Set(float64(now.Unix()))
	if outcome == outcomeUpdated {
		r.log.Info("federated bundle updated", telemetry.TrustDomain, td,
			telemetry.Count, len(stored.GetX509Authorities()), "sequence", stored.GetSequenceNumber())
	}
	return stored, nil
}

func (r *Refresher) fetchAndStore(ctx context.Context, st *relState) (*typesv1.Bundle, string, error) {
	rel := st.fetcher.rel
	td := rel.TrustDomain.Name()
	stored, err := r.cfg.Store.GetBundle(ctx, td)
	switch {
	case errors.Is(err, store.ErrNotFound):
		stored = st.bootstrap
	case err != nil:
		return nil, outcomeFailed, fmt.Errorf("read stored bundle: %w", err)
	}
	doc, err := st.fetcher.fetch(ctx, stored)
	if err != nil {
		return nil, outcomeFailed, err
	}
	fetched, err := Parse(rel.TrustDomain, doc)
	if err != nil {
		return nil, outcomeFailed, err
	}
	updated, err := r.cfg.Store.UpdateBundle(ctx, td, func(b *typesv1.Bundle) error {
		if SameContent(b, fetched) {
			return errUnchanged
		}
		setContent(b, fetched)
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged):
		return stored, outcomeUnchanged, nil
	case err != nil:
		return nil, outcomeFailed, fmt.Errorf("store bundle: %w", err)
	}
	return updated, outcomeUpdated, nil
}
