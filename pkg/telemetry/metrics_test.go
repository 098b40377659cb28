package telemetry

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestNewCounterVec_NamesAndRegistersOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := NewCounterVec(reg, "demo", "things_total", "Things.", "kind")
	b := NewCounterVec(reg, "demo", "things_total", "Things.", "kind")
	a.WithLabelValues("x").Inc()
	if a != b || testutil.ToFloat64(b.WithLabelValues("x")) != 1 {
		t.Fatal("a second registration did not return the first collector")
	}
	if n, err := testutil.GatherAndCount(reg, "nhid_demo_things_total"); err != nil || n != 1 {
		t.Fatalf("gathered %d series of nhid_demo_things_total, %v", n, err)
	}
	// Without a registry the collector works unregistered.
	h := NewHistogram(nil, "demo", "seconds", "Time.", []float64{1})
	h.Observe(0.5)
}
