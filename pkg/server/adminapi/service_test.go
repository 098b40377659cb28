package adminapi

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/entry"
)

func TestNew_ChecksConfig(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	valid := func() Config { return Config{TrustDomain: td, Store: h.store} }
	tests := []struct {
		name   string
		mutate func(c *Config)
		msg    string // "" = valid
	}{
		{"minimal config takes the defaults", func(*Config) {}, ""},
		{"missing trust domain", func(c *Config) { c.TrustDomain = spiffeid.TrustDomain{} }, "trust domain is required"},
		{"missing store", func(c *Config) { c.Store = nil }, "store is required"},
		{"inconsistent limits", func(c *Config) {
			c.Limits = entry.Limits{MinX509TTL: time.Hour, MaxX509TTL: time.Minute, MinJWTTTL: time.Minute, MaxJWTTTL: time.Hour}
		}, "maximum x509 TTL"},
		{"default token TTL above the maximum", func(c *Config) { c.DefaultTokenTTL = 2 * time.Hour; c.MaxTokenTTL = time.Hour }, "below the default"},
		{"sub-second token TTL", func(c *Config) { c.DefaultTokenTTL = time.Millisecond }, "below 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.mutate(&cfg)
			svc, err := New(cfg)
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if svc.tokenTTL != DefaultTokenTTL || svc.maxTTL != MaxTokenTTL || svc.limits != entry.DefaultLimits() {
					t.Errorf("defaults not applied: ttl %v max %v limits %+v", svc.tokenTTL, svc.maxTTL, svc.limits)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("New error = %v, want one containing %q", err, tt.msg)
			}
		})
	}
}
