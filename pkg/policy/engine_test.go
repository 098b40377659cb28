package policy

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nhid/nhid/pkg/clock"
)

// syncBuffer is a log sink tests read while the engine writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type testEngine struct {
	*Engine
	logs *syncBuffer
	reg  *prometheus.Registry
}

// newEngine builds an engine for the policy at path, logging to a buffer.
func newEngine(t *testing.T, cfg Config) *testEngine {
	t.Helper()
	te := &testEngine{logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	cfg.Log = slog.New(slog.NewTextHandler(te.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Metrics = te.reg
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	te.Engine = e
	return te
}

// run starts the watcher, polling fast, and stops it when the test ends.
func (te *testEngine) run(t *testing.T) {
	t.Helper()
	te.pollInterval = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- te.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil when its context ends", err)
		}
	})
}

// actionRule allows one action.
func actionRule(name, action string) string {
	return lines("version: 1", "rules:",
		"  - name: "+name,
		`    when: request.action == "`+action+`"`,
		"    effect: allow")
}

func decideAction(e *Engine, action string) Decision {
	in := baseInput()
	in.Request.Action = action
	return e.Decide(context.Background(), in)
}

func TestNew_ReportsEveryProblemWithItsPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	writeFile(t, path, lines("version: 1", "rules:", "  - {name: a, when: request.scope, effect: allow}",
		"  - {name: b, when: 'true', effect: deny, max_ttl: 1h}"))
	_, err := New(Config{Path: path})
	want := lines("policy "+path+":",
		path+":3:28: rules[0].when: undeclared reference to 'request.scope' (did you mean 'request.scopes'?)",
		path+":4:52: rules[1].max_ttl: only allow rules take max_ttl; this rule's effect is deny")
	if err == nil {
		t.Fatal("New succeeded, want an error")
	}
	if diff := cmp.Diff(strings.TrimSuffix(want, "\n"), err.Error()); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without a path succeeded")
	}
}

func TestEngine_BusinessHoursRuleWithAFakeClock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hours.yaml")
	writeFile(t, path, lines("version: 1", "rules:",
		"  - name: business-hours",
		"    when: time.weekday >= 1 && time.weekday <= 5 && time.hour >= 9 && time.hour < 18",
		"    effect: allow"))
	berlin := mustLocation(t, "Europe/Berlin")
	clk := clock.NewFake(time.Date(2026, 12, 8, 10, 0, 0, 0, berlin)) // a Tuesday
	te := newEngine(t, Config{Path: path, Location: berlin, Clock: clk})
	in := baseInput()
	in.Now = time.Time{} // taken from the clock
	if got := te.Decide(context.Background(), in); got.Effect != Allow || got.Rule != "business-hours" {
		t.Errorf("at 10:00 Decide = %+v, want allow by business-hours", got)
	}
	clk.Set(time.Date(2026, 12, 8, 23, 0, 0, 0, berlin))
	if got := te.Decide(context.Background(), in); got.Effect != Deny || got.Rule != "" {
		t.Errorf("at 23:00 Decide = %+v, want the no-match denial", got)
	}
}

func TestEngine_HotReloadAppliesChangedRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	writeFile(t, path, actionRule("old", "deploy"))
	te := newEngine(t, Config{Path: path})
	te.run(t)
	if got := decideAction(te.Engine, "deploy"); got.Rule != "old" {
		t.Fatalf("before the change Decide = %+v, want rule old", got)
	}
	writeFile(t, path, actionRule("new", "read"))
	waitFor(t, "the new rule", func() bool { return decideAction(te.Engine, "read").Rule == "new" })
	if got := decideAction(te.Engine, "deploy"); got.Effect != Deny {
		t.Errorf("after the change, the removed rule still decides: %+v", got)
	}
	if !strings.Contains(te.logs.String(), "policy reloaded") {
		t.Errorf("no reload logged:\n%s", te.logs)
	}
	if got := testutil.ToFloat64(te.metrics.reloads.WithLabelValues("ok")); got != 1 {
		t.Errorf("reloads_total{result=ok} = %v, want 1", got)
	}
}

func TestEngine_BadReloadKeepsTheRulesInForce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	writeFile(t, path, actionRule("good", "deploy"))
	te := newEngine(t, Config{Path: path})
	te.run(t)
	writeFile(t, path, lines("version: 1", "rules:", "  - {name: bad, when: request.actoin == 'x', effect: allow}"))
	waitFor(t, "the failed reload to be logged", func() bool {
		return strings.Contains(te.logs.String(), "policy reload failed")
	})
	logs := te.logs.String()
	if !strings.Contains(logs, path+":3:30: rules[0].when: undeclared reference to 'request.actoin'") {
		t.Errorf("the log does not locate the problem:\n%s", logs)
	}
	if got := decideAction(te.Engine, "deploy"); got.Effect != Allow || got.Rule != "good" {
		t.Errorf("after a bad reload Decide = %+v, want the old rule to allow", got)
	}
	// A direct reload fails the same way and changes nothing either.
	if err := te.Reload(); err == nil || !strings.Contains(err.Error(), "request.actoin") {
		t.Errorf("Reload error = %v, want the compile problem", err)
	}
	if diff := cmp.Diff([]string{"good"}, te.Rules()); diff != "" {
		t.Errorf("rules in force (-want +got):\n%s", diff)
	}
	// The watcher logged the bad content once, not on every poll.
	if n := strings.Count(te.logs.String(), "policy reload failed"); n != 2 {
		t.Errorf("reload failure logged %d times, want 2 (watcher once, Reload once)", n)
	}
}

func TestEngine_ReloadAppliesImmediately(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	writeFile(t, path, actionRule("first", "deploy"))
	te := newEngine(t, Config{Path: path})
	writeFile(t, path, actionRule("second", "deploy"))
	if err := te.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := decideAction(te.Engine, "deploy"); got.Rule != "second" {
		t.Errorf("after Reload Decide = %+v, want rule second", got)
	}
}

func TestEngine_WatchesADirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "20-b.yaml"), actionRule("b", "deploy"))
	te := newEngine(t, Config{Path: dir})
	te.run(t)
	writeFile(t, filepath.Join(dir, "10-a.yaml"), actionRule("a", "deploy"))
	waitFor(t, "the added file", func() bool { return decideAction(te.Engine, "deploy").Rule == "a" })
	if diff := cmp.Diff([]string{"a", "b"}, te.Rules()); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	// Removing every file is refused: an empty policy is no policy.
	for _, name := range []string{"10-a.yaml", "20-b.yaml"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the failed reload", func() bool { return strings.Contains(te.logs.String(), "no *.yaml files") })
	if got := decideAction(te.Engine, "deploy"); got.Rule != "a" {
		t.Errorf("with the files gone Decide = %+v, want the rules in force", got)
	}
}

func TestEngine_DecideLogsAndCountsEvaluationErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	writeFile(t, path, lines("version: 1", "rules:",
		"  - {name: details, when: 'request.authorization_details[0].type == \"x\"', effect: allow}"))
	te := newEngine(t, Config{Path: path})
	got := te.Decide(context.Background(), baseInput()) // no authorization_details: index out of range
	if got.Effect != Deny || got.Rule != "details" {
		t.Errorf("Decide = %+v, want a denial naming the rule", got)
	}
	logs := te.logs.String()
	for _, want := range []string{"policy evaluation failed; denying", "rule=details", "spiffe_id=spiffe://example.org/agent", "index out of bounds"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if n := testutil.ToFloat64(te.metrics.errors.WithLabelValues("details")); n != 1 {
		t.Errorf("evaluation_errors_total{rule=details} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(te.metrics.decisions.WithLabelValues("deny", "details")); n != 1 {
		t.Errorf("decisions_total{effect=deny,rule=details} = %v, want 1", n)
	}
}

func TestEngine_DecideDeniesWhenTheContextEnds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	writeFile(t, path, actionRule("a", "deploy"))
	te := newEngine(t, Config{Path: path})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := te.Decide(ctx, baseInput()); got.Effect != Deny {
		t.Errorf("Decide with an ended context = %+v, want a denial", got)
	}
}

func TestEngine_WatcherWaitsForAChangeToSettle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	writeFile(t, path, actionRule("first", "deploy"))
	te := newEngine(t, Config{Path: path})
	poll := func() {
		te.reloadMu.Lock()
		defer te.reloadMu.Unlock()
		if err := te.reload(false); err != nil {
			t.Logf("poll: %v", err)
		}
	}
	// Half a file, as an editor writing in place leaves it for a moment.
	full := actionRule("second", "deploy")
	writeFile(t, path, full[:len(full)/2])
	poll()
	writeFile(t, path, full)
	poll()
	if strings.Contains(te.logs.String(), "reload failed") || te.Rules()[0] != "first" {
		t.Fatalf("a change seen once was acted on; rules %v, logs:\n%s", te.Rules(), te.logs)
	}
	poll()
	if diff := cmp.Diff([]string{"second"}, te.Rules()); diff != "" {
		t.Errorf("after the change settled, rules (-want +got):\n%s", diff)
	}
	poll()
	if n := strings.Count(te.logs.String(), "policy reloaded"); n != 1 {
		t.Errorf("reloaded %d times, want once", n)
	}
}
