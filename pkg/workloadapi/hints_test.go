package workloadapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nhid/nhid/pkg/telemetry"
)

func TestHintSet_LogsLeftOutIdentitiesWithTheirHints(t *testing.T) {
	tests := []struct {
		name      string
		add       [][2]string // hint, SPIFFE ID
		wantSent  []bool
		wantLine  map[string]any // nil = nothing logged
		wantParts []string
	}{
		{
			name:     "distinct and empty hints are all sent",
			add:      [][2]string{{"a", "spiffe://example.org/1"}, {"", "spiffe://example.org/2"}, {"", "spiffe://example.org/3"}},
			wantSent: []bool{true, true, true},
		},
		{
			name: "later identities with a taken hint are left out",
			add: [][2]string{
				{"db", "spiffe://example.org/1"}, {"db", "spiffe://example.org/2"},
				{"web", "spiffe://example.org/3"}, {"db", "spiffe://example.org/4"}, {"web", "spiffe://example.org/5"},
			},
			wantSent: []bool{true, false, true, false, false},
			wantLine: map[string]any{
				telemetry.Count:    float64(3),
				telemetry.SPIFFEID: []any{"spiffe://example.org/2", "spiffe://example.org/4", "spiffe://example.org/5"},
				telemetry.Hint:     []any{"db", "db", "web"},
			},
			wantParts: []string{"spiffe://example.org/2", "db", "spiffe://example.org/4", "db", "spiffe://example.org/5", "web"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s hintSet
			var sent []bool
			for _, a := range tt.add {
				sent = append(sent, s.add(a[0], a[1]))
			}
			if diff := cmp.Diff(tt.wantSent, sent); diff != "" {
				t.Errorf("sent (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantParts, s.dropped(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("dropped (-want +got):\n%s", diff)
			}
			var buf bytes.Buffer
			s.logDropped(slog.New(slog.NewJSONHandler(&buf, nil)))
			if tt.wantLine == nil {
				if buf.Len() != 0 {
					t.Errorf("logged %s, want nothing", buf.String())
				}
				return
			}
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			got := map[string]any{}
			for k := range tt.wantLine {
				got[k] = line[k]
			}
			if diff := cmp.Diff(tt.wantLine, got); diff != "" {
				t.Errorf("log line keys (-want +got):\n%s", diff)
			}
		})
	}
}
