package auditlog_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/audit/auditlog"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait: generous, tests assert that things
// happen, never how fast.
const waitTimeout = 20 * time.Second

func openBolt(tb testing.TB, dir string) *bolt.Store {
	tb.Helper()
	s, err := bolt.Open(filepath.Join(dir, "nhid.db"), bolt.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// running is a Log whose Run goroutine the test controls.
type running struct {
	*auditlog.Log
	stop func() error
}

// start builds a Log on st with cfg's other settings and runs it until
// the test ends or stop is called.
func start(tb testing.TB, st store.AuditStore, keyFile string, cfg auditlog.Config) *running {
	tb.Helper()
	cfg.Store, cfg.KeyFile = st, keyFile
	if cfg.Server == "" {
		cfg.Server = "spiffe://example.org/nhid/server"
	}
	l, err := auditlog.New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	var runErr error
	r := &running{Log: l, stop: func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(waitTimeout):
				runErr = fmt.Errorf("Run did not return within %v", waitTimeout)
			}
		})
		return runErr
	}}
	tb.Cleanup(func() { _ = r.stop() })
	return r
}

func event(i int) audit.Event {
	return audit.Event{
		Actor: "spiffe://example.org/agent", OnBehalfOf: "alice@example.org", Action: audit.ActionGrantDecide,
		Target: fmt.Sprintf("grant-%d", i), Outcome: audit.OutcomeSuccess, Details: map[string]any{"i": i, "scopes": []string{"repo:read"}},
	}
}

func flush(tb testing.TB, l *auditlog.Log) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		tb.Fatalf("Flush: %v", err)
	}
}

// verifyStore verifies everything st holds, trusting keys.
func verifyStore(tb testing.TB, st store.AuditStore, keys ...[]byte) (audit.Summary, []*typesv1.AuditRecord, error) {
	tb.Helper()
	ctx := context.Background()
	cps, err := st.ListAuditCheckpoints(ctx, 0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	head, err := st.AuditHead(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	recs, err := st.ListAudit(ctx, store.ListAuditRequest{})
	if err != nil {
		tb.Fatal(err)
	}
	var trusted []audit.TrustedKey
	for _, k := range keys {
		trusted = append(trusted, audit.TrustedKey{PublicKey: k, Source: audit.TrustServer})
	}
	v := audit.NewVerifier(audit.VerifyConfig{TrustedKeys: trusted, Checkpoints: cps, Head: &audit.Head{Seq: head.Seq, Hash: head.Hash}})
	for _, r := range recs {
		if v.Add(r) != nil {
			break
		}
	}
	sum, err := v.Finish()
	return sum, recs, err
}

func TestLog_RecordsFormAChainThatVerifies(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	l := start(t, st, filepath.Join(dir, "audit", "checkpoint.key"), auditlog.Config{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				l.Record(t.Context(), event(w*100+i))
			}
		})
	}
	wg.Wait()
	if err := l.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	sum, recs, err := verifyStore(t, st, l.TrustedKeys()...)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if len(recs) != 201 || recs[0].Action != audit.ActionAuditKey || recs[0].Target != l.KeyID() {
		t.Fatalf("%d records, first %s %s; want 201 starting with the key announcement", len(recs), recs[0].Action, recs[0].Target)
	}
	// The stop's checkpoint signs everything.
	if sum.CoveredSeq != 201 || sum.Checkpoints != 1 {
		t.Fatalf("summary %+v: want one checkpoint covering all 201 records", sum)
	}
	if recs[1].Details == "" || recs[1].Server != "spiffe://example.org/nhid/server" || recs[1].Time == 0 {
		t.Fatalf("record 2 lacks details, server or time: %v", recs[1])
	}
}

func TestLog_RestartContinuesTheChainWithTheSameKey(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "audit", "checkpoint.key")
	st := openBolt(t, dir)
	defer st.Close()
	first := start(t, st, keyFile, auditlog.Config{})
	first.Record(t.Context(), event(1))
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	second := start(t, st, keyFile, auditlog.Config{})
	second.Record(t.Context(), event(2))
	if err := second.stop(); err != nil {
		t.Fatal(err)
	}
	if first.KeyID() != second.KeyID() {
		t.Fatalf("the key changed across a restart: %s, then %s", first.KeyID(), second.KeyID())
	}
	sum, recs, err := verifyStore(t, st, second.TrustedKeys()...)
	if err != nil {
		t.Fatalf("verify after a restart: %v", err)
	}
	if len(recs) != 4 || recs[2].Seq != 3 || !bytes.Equal(recs[2].PrevHash, recs[1].Hash) || sum.CoveredSeq != 4 {
		t.Fatalf("chain across a restart: %d records, summary %+v", len(recs), sum)
	}
	for path, want := range map[string]os.FileMode{keyFile: 0o600, filepath.Dir(keyFile): 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}
}

func TestLog_CheckpointsEveryNRecordsAndEveryInterval(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	l := start(t, st, filepath.Join(dir, "k"), auditlog.Config{CheckpointEvery: 10, CheckpointInterval: time.Hour})
	for i := range 35 {
		l.Record(t.Context(), event(i))
		flush(t, l.Log)
	}
	cps, err := st.ListAuditCheckpoints(t.Context(), 0, 0)
	if err != nil || len(cps) != 3 || cps[0].Seq != 10 || cps[2].Seq != 30 {
		t.Fatalf("checkpoints after 36 records, one every 10: %v, %v", cps, err)
	}
	_ = l.stop()

	// A short interval signs whatever this server appended since.
	st2 := openBolt(t, t.TempDir())
	defer st2.Close()
	l2 := start(t, st2, filepath.Join(dir, "k2"), auditlog.Config{CheckpointInterval: 20 * time.Millisecond})
	l2.Record(t.Context(), event(1))
	deadline := time.Now().Add(waitTimeout)
	for {
		cps, err := st2.ListAuditCheckpoints(t.Context(), 0, 0)
		if err == nil && len(cps) > 0 && cps[0].Seq == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of seq 2 within %v: %v %v", waitTimeout, cps, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLog_AFullBufferBlocksBrieflyThenDropsAndCounts(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	reg := prometheus.NewRegistry()
	// Not running: nothing drains the buffer of 3 (the announcement takes one).
	l, err := auditlog.New(auditlog.Config{Store: st, KeyFile: filepath.Join(dir, "k"), Buffer: 3, BlockTimeout: 5 * time.Millisecond, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		l.Record(t.Context(), event(i))
	}
	if got := dropped(t, reg, "buffer_full"); got != 4 {
		t.Fatalf("dropped %v records, want 4", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if recs, _ := st.ListAudit(t.Context(), store.ListAuditRequest{}); len(recs) != 3 {
		t.Fatalf("%d records stored, want the 3 that fitted", len(recs))
	}
	// After the stop, records are dropped and counted, never queued.
	l.Record(t.Context(), event(9))
	if got := dropped(t, reg, "stopped"); got != 1 {
		t.Fatalf("dropped after stop: %v, want 1", got)
	}
	if err := l.Flush(t.Context()); err == nil {
		t.Fatal("Flush after the stop succeeded")
	}
}

// dropped reads nhid_audit_records_dropped_total{reason=reason}.
func dropped(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if mf.GetName() == "nhid_audit_records_dropped_total" && lp.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestLog_SinkStreamsCommittedRecordsAsJSONLines(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	sinkPath := filepath.Join(dir, "audit.jsonl")
	sink, err := auditlog.OpenSink(sinkPath)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	l := start(t, st, filepath.Join(dir, "k"), auditlog.Config{Sink: sink})
	for i := range 20 {
		l.Record(t.Context(), event(i))
	}
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(sinkPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []*typesv1.AuditRecord
	var cps int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, err := audit.UnmarshalLine(sc.Bytes())
		if err != nil {
			t.Fatalf("sink line %q: %v", sc.Text(), err)
		}
		if line.Record != nil {
			recs = append(recs, line.Record)
		}
		if line.Checkpoint != nil {
			cps++
		}
	}
	stored, err := st.ListAudit(t.Context(), store.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(stored) || cps != 1 {
		t.Fatalf("sink had %d records and %d checkpoints; the store %d records and 1 checkpoint", len(recs), cps, len(stored))
	}
	for i := range recs {
		if !bytes.Equal(recs[i].Hash, stored[i].Hash) || !bytes.Equal(audit.RecordHash(recs[i]), recs[i].Hash) {
			t.Fatalf("sink record %d differs from the stored one or does not hash to its hash", i+1)
		}
	}
}
