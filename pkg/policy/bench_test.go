package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// benchmarkDecide measures Engine.Decide on the policy in doc and reports
// the median and 99th-percentile wall-clock latency of single decisions,
// and the process CPU time per decision (GC included), which a machine
// shared with other work inflates less than wall-clock time.
func benchmarkDecide(b *testing.B, doc string, in Input, wantRule string) {
	path := filepath.Join(b.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		b.Fatal(err)
	}
	e, err := New(Config{Path: path})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	ctx := context.Background()
	if d := e.Decide(ctx, in); d.Rule != wantRule {
		b.Fatalf("Decide = %+v, want rule %s to decide", d, wantRule)
	}
	samples := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	cpuStart := cpuTime(b)
	for b.Loop() {
		start := time.Now()
		e.Decide(ctx, in)
		samples = append(samples, time.Since(start))
	}
	b.ReportMetric(float64((cpuTime(b)-cpuStart).Nanoseconds())/float64(len(samples))/1e3, "cpu-µs/op")
	slices.Sort(samples)
	pct := func(p float64) float64 { return float64(samples[int(p*float64(len(samples)-1))].Nanoseconds()) }
	b.ReportMetric(pct(0.50)/1e3, "p50-µs")
	b.ReportMetric(pct(0.99)/1e3, "p99-µs")
}

// BenchmarkDecide_50RulesLastMatches is the worst case of a large policy:
// 49 rules that each read the subject, the request and the time before
// failing, then the one that matches.
func BenchmarkDecide_50RulesLastMatches(b *testing.B) {
	var doc strings.Builder
	doc.WriteString("version: 1\nrules:\n")
	for i := range 49 {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&doc, "  - name: r%d\n    when: subject.reputation >= 300 && time.hour >= 9 && request.resource.startsWith('svc-%d/')\n    effect: allow\n", i, i)
		case 1:
			fmt.Fprintf(&doc, "  - name: r%d\n    when: request.scopes.exists(s, s.startsWith('svc-%d:')) && usage.last_hour < 100\n    effect: allow\n    max_ttl: 15m\n", i, i)
		default:
			fmt.Fprintf(&doc, "  - name: r%d\n    when: subject.purpose == 'purpose %d' || request.action in ['a%d', 'b%d', 'c%d']\n    effect: deny\n", i, i, i, i, i)
		}
	}
	doc.WriteString("  - name: last\n    when: request.action == 'deploy' && request.scopes.exists(s, s.startsWith('deploy:'))\n" +
		"    effect: allow\n    scopes: request.scopes.filter(s, s.startsWith('deploy:'))\n    max_ttl: 30m\n")
	benchmarkDecide(b, doc.String(), baseInput(), "last")
}

// BenchmarkDecide_Typical5Rules is a policy of the size most deployments
// have, deciding a payment on its fourth rule.
func BenchmarkDecide_Typical5Rules(b *testing.B) {
	doc := lines("version: 1", "rules:",
		"  - {name: low-rep, when: 'subject.reputation < 300', effect: deny}",
		"  - name: prod-delete",
		"    when: request.action == 'delete' && request.resource.startsWith('prod/')",
		"    effect: require_approval",
		"    critical: true",
		"  - name: payments-limit",
		"    when: request.scopes.exists(s, s.startsWith('payments:')) && usage.last_hour >= 10",
		"    effect: deny",
		"  - name: payments",
		"    when: >-",
		"      request.scopes.exists(s, s.startsWith('payments:')) &&",
		"      request.authorization_details.all(d, d.type == 'payment_initiation')",
		"    effect: allow",
		"    scopes: request.scopes.filter(s, s.startsWith('payments:'))",
		"    max_ttl: 5m",
		"  - name: deploys",
		"    when: request.scopes.exists(s, s.startsWith('deploy:')) && time.weekday >= 1 && time.weekday <= 5",
		"    effect: allow",
	)
	in := baseInput()
	in.Request.Scopes = []string{"payments:initiate", "ledger:read"}
	in.Request.Action = "pay"
	in.Request.AuthorizationDetails = []any{map[string]any{"type": "payment_initiation", "amount": 12.5}}
	benchmarkDecide(b, doc, in, "payments")
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
