package agentapi

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/attestor"
)

func TestNew_ReportsEveryConfigProblem(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{
			name: "empty config",
			cfg:  Config{},
			want: []string{"TrustDomain: required", "Store: required", "CA: required", "Verifiers: at least one"},
		},
		{
			name: "bad durations and page size",
			cfg: Config{TrustDomain: td, Store: h.store, CA: h.ca, Verifiers: []attestor.NodeVerifier{challengeVerifier{}},
				AgentSVIDTTL: time.Millisecond, DefaultJWTTTL: 2 * time.Hour, MaxJWTTTL: time.Hour, SnapshotPageSize: -1},
			want: []string{"AgentSVIDTTL: 1ms is shorter than 1s", "DefaultJWTTTL: 2h0m0s exceeds MaxJWTTTL 1h0m0s",
				"SnapshotPageSize: -1 is not between 1 and 10000"},
		},
		{
			name: "duplicate verifier",
			cfg: Config{TrustDomain: spiffeid.RequireTrustDomainFromString("x.org"), Store: h.store, CA: h.ca,
				Verifiers: []attestor.NodeVerifier{challengeVerifier{}, challengeVerifier{}}},
			want: []string{`Verifiers[1]: type "test_challenge" listed twice`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
