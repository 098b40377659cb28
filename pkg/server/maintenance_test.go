package server

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestMaintenance_PrunesExpiredRecordsAndCountsTheRest(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	clk := clock.NewFake(now)
	st, err := bolt.Open(filepath.Join(t.TempDir(), "nhid.db"), bolt.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for _, tok := range []*typesv1.JoinToken{
		{Id: "aaaaaaaaaaaaaaaaaaaaaaaa", SecretHash: make([]byte, 32), ExpiresAt: now.Add(-2 * time.Hour).Unix()},
		{Id: "bbbbbbbbbbbbbbbbbbbbbbbb", SecretHash: make([]byte, 32), ExpiresAt: now.Add(time.Hour).Unix()},
	} {
		if err := st.CreateJoinToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	err = st.RecordIssued(ctx, []*typesv1.IssuedSVID{
		{Id: "old", Kind: typesv1.SVIDKind_SVID_KIND_X509, ExpiresAt: now.Add(-48 * time.Hour).Unix()},
		{Id: "new", Kind: typesv1.SVIDKind_SVID_KIND_X509, ExpiresAt: now.Add(time.Hour).Unix()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CreateEntries(ctx, []*typesv1.Entry{{SpiffeId: "spiffe://example.org/a", ParentId: "spiffe://example.org/p", Selectors: []string{"unix:uid:1"}}}); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	cfg := Config{Clock: clk, Metrics: reg, MaintenanceEvery: time.Minute, TombstoneRetention: time.Hour,
		LedgerRetention: 24 * time.Hour, TokenRetention: time.Hour}
	m := newMaintenance(cfg, st, telemetry.DiscardLogger())
	m.tick(ctx)

	tokens, err := st.ListJoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 1 || tokens[0].GetId() != "bbbbbbbbbbbbbbbbbbbbbbbb" {
		t.Errorf("tokens after pruning = %v, want only the live one", tokens)
	}
	if _, err := st.GetIssued(ctx, "old"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired ledger row: %v, want it pruned", err)
	}
	if _, err := st.GetIssued(ctx, "new"); err != nil {
		t.Errorf("live ledger row: %v", err)
	}
	if got := testutil.ToFloat64(m.entries); got != 1 {
		t.Errorf("entries gauge = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.nodes); got != 0 {
		t.Errorf("nodes gauge = %v, want 0", got)
	}
}
