package grant

import (
	"github.com/nhid/nhid/pkg/grantreq"
	"strings"
	"testing"
	"time"
)

func TestNew_ReportsEveryConfigProblem(t *testing.T) {
	loose := grantreq.DefaultLimits()
	loose.MaxScopes = 100
	_, err := New(Config{MaxTTL: 48 * time.Hour, Limits: loose, SweepEvery: time.Millisecond})
	for _, want := range []string{"TrustDomain: required", "Store: required", "Signer: required", "MaxTTL", "MaxScopes", "SweepEvery"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New error %v does not mention %q", err, want)
		}
	}
}

func TestNew_FillsDefaults(t *testing.T) {
	h := newHarness(t)
	if h.svc.MaxTTL() != grantreq.DefaultMaxTTL || h.svc.limits != grantreq.DefaultLimits() || h.svc.sweep != DefaultSweepEvery {
		t.Errorf("defaults: max ttl %v, limits %+v, sweep %v", h.svc.MaxTTL(), h.svc.limits, h.svc.sweep)
	}
	if h.svc.Audience() != "spiffe://example.org" {
		t.Errorf("audience %q, want the trust domain's SPIFFE ID", h.svc.Audience())
	}
}
