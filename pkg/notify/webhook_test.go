package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var secret = []byte("0123456789abcdef0123456789abcdef-test")

// attempt is one request the receiver saw, with its verification.
type attempt struct {
	delivery string
	body     Body
	verified error
	header   http.Header
}

// receiver is a webhook endpoint that checks signatures and answers with
// the next of its scripted status codes (200 once they run out).
type receiver struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	answers []int
	got     []attempt
	arrived chan struct{}
	stall   time.Duration // the first request waits this long
}

func newReceiver(t *testing.T, answers ...int) *receiver {
	r := &receiver{t: t, answers: answers, arrived: make(chan struct{}, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	raw, _ := io.ReadAll(req.Body)
	var b Body
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	_ = dec.Decode(&b)
	a := attempt{
		delivery: req.Header.Get(HeaderDelivery), body: b, header: req.Header.Clone(),
		verified: Verify(secret, req.Header.Get(HeaderTimestamp), req.Header.Get(HeaderSignature), raw, time.Now(), 0),
	}
	r.mu.Lock()
	first := len(r.got) == 0
	r.got = append(r.got, a)
	code := http.StatusOK
	if len(r.answers) > 0 {
		code, r.answers = r.answers[0], r.answers[1:]
	}
	r.mu.Unlock()
	if first && r.stall > 0 {
		time.Sleep(r.stall)
	}
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "0")
	}
	w.WriteHeader(code)
	r.arrived <- struct{}{}
}

func (r *receiver) attempts() []attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]attempt(nil), r.got...)
}

// wait waits for n attempts in all.
func (r *receiver) wait(n int) []attempt {
	r.t.Helper()
	deadline := time.After(10 * time.Second)
	for len(r.attempts()) < n {
		select {
		case <-r.arrived:
		case <-deadline:
			r.t.Fatalf("%d attempts within 10s, want %d", len(r.attempts()), n)
		}
	}
	return r.attempts()
}

// sender is a Webhook to url with fast retries, run for the test.
type sender struct {
	*Webhook
	reg  *prometheus.Registry
	logs *bytes.Buffer
	stop func()
}

func newSender(t *testing.T, url string, mod func(*WebhookConfig)) *sender {
	t.Helper()
	s := &sender{reg: prometheus.NewRegistry(), logs: &bytes.Buffer{}}
	var mu sync.Mutex
	cfg := WebhookConfig{
		URL: url, Secret: secret, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Timeout: 2 * time.Second, Metrics: s.reg,
		Log: slog.New(slog.NewTextHandler(lockedWriter{&mu, s.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Webhook = w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	s.stop = func() { cancel(); <-done }
	t.Cleanup(s.stop)
	return s
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func note() Notification {
	return Notification{Type: TypeReputationAlert, Owner: "ana@example.org", Subject: "spiffe://example.org/agent/deployer",
		Data: map[string]any{"score": 280, "threshold": "alert"}}
}

func counter(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

func TestWebhook_PostsSignedJSONThatVerifies(t *testing.T) {
	r := newReceiver(t)
	s := newSender(t, r.srv.URL+"/hooks/nhid", nil)
	before := time.Now().Add(-time.Second)
	s.Notify(context.Background(), note())
	a := r.wait(1)[0]
	if a.verified != nil {
		t.Fatalf("the signature does not verify: %v", a.verified)
	}
	at, err := time.Parse(time.RFC3339, a.body.Time)
	if err != nil || at.Before(before.Truncate(time.Second)) || at.After(time.Now()) {
		t.Errorf("time %q is not the notification's (%v)", a.body.Time, err)
	}
	want := Body{ID: a.delivery, Type: TypeReputationAlert, Time: a.body.Time, Owner: "ana@example.org",
		Subject: "spiffe://example.org/agent/deployer", Data: map[string]any{"score": 280.0, "threshold": "alert"}}
	if diff := cmp.Diff(want, a.body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	if a.header.Get("Content-Type") != "application/json" || len(a.delivery) != 36 {
		t.Errorf("headers %v", a.header)
	}
	waitFor(t, func() bool { return counter(t, s.metrics.sent.WithLabelValues(TypeReputationAlert)) == 1 })
}

func TestWebhook_RetriesServerErrorsAndTooManyRequestsWithTheSameDeliveryID(t *testing.T) {
	r := newReceiver(t, http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusInternalServerError)
	s := newSender(t, r.srv.URL, nil)
	s.Notify(context.Background(), note())
	got := r.wait(4)
	for i, a := range got {
		if a.delivery != got[0].delivery || a.verified != nil {
			t.Errorf("attempt %d: delivery %s (first %s), verified %v", i+1, a.delivery, got[0].delivery, a.verified)
		}
	}
	waitFor(t, func() bool { return counter(t, s.metrics.sent.WithLabelValues(TypeReputationAlert)) == 1 })
	if n := counter(t, s.metrics.retries); n != 3 {
		t.Errorf("retries_total = %v, want 3", n)
	}
}

func TestWebhook_ClientErrorsAndRedirectsAreNotRetried(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusFound} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			r := newReceiver(t, code)
			s := newSender(t, r.srv.URL, nil)
			s.Notify(context.Background(), note())
			r.wait(1)
			waitFor(t, func() bool { return counter(t, s.metrics.failed.WithLabelValues(TypeReputationAlert, "rejected")) == 1 })
			time.Sleep(50 * time.Millisecond) // longer than any backoff
			if n := len(r.attempts()); n != 1 {
				t.Errorf("%d attempts, want 1", n)
			}
		})
	}
}

func TestWebhook_GivesUpAfterMaxAttempts(t *testing.T) {
	r := newReceiver(t, 500, 500, 500, 500, 500)
	s := newSender(t, r.srv.URL, func(c *WebhookConfig) { c.MaxAttempts = 3 })
	s.Notify(context.Background(), note())
	r.wait(3)
	waitFor(t, func() bool {
		return counter(t, s.metrics.failed.WithLabelValues(TypeReputationAlert, "exhausted")) == 1
	})
	if n := len(r.attempts()); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
}

func TestWebhook_TimeoutsAndBrokenConnectionsAreRetried(t *testing.T) {
	r := newReceiver(t)
	r.stall = 500 * time.Millisecond
	s := newSender(t, r.srv.URL, func(c *WebhookConfig) { c.Timeout = 100 * time.Millisecond })
	s.Notify(context.Background(), note())
	got := r.wait(2)
	waitFor(t, func() bool { return counter(t, s.metrics.sent.WithLabelValues(TypeReputationAlert)) == 1 })
	if got[0].delivery != got[1].delivery {
		t.Error("the retry after a timeout is another delivery")
	}

	// A receiver that drops the connection.
	var calls int
	var mu sync.Mutex
	drop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			conn, _, _ := w.(http.Hijacker).Hijack()
			_ = conn.Close()
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(drop.Close)
	s2 := newSender(t, drop.URL, nil)
	s2.Notify(context.Background(), note())
	waitFor(t, func() bool { return counter(t, s2.metrics.sent.WithLabelValues(TypeReputationAlert)) == 1 })
}

func TestWebhook_FullQueueDropsAndCounts(t *testing.T) {
	w, err := NewWebhook(WebhookConfig{URL: "http://127.0.0.1:1/", Secret: secret, QueueSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		w.Notify(context.Background(), note()) // no Run: nothing leaves the queue
	}
	if n := counter(t, w.metrics.failed.WithLabelValues(TypeReputationAlert, "queue_full")); n != 1 {
		t.Errorf("dropped %v, want 1", n)
	}
	w.Notify(context.Background(), Notification{Type: "x", Data: map[string]any{"bad": make(chan int)}})
	if n := counter(t, w.metrics.failed.WithLabelValues("x", "encode")); n != 1 {
		t.Errorf("unencodable notification: dropped %v, want 1", n)
	}
}

func TestWebhook_RunDeliversWhatIsQueuedWhenItStops(t *testing.T) {
	r := newReceiver(t)
	w, err := NewWebhook(WebhookConfig{URL: r.srv.URL, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		w.Notify(context.Background(), note())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(r.attempts()); n != 5 {
		t.Errorf("%d delivered while stopping, want 5", n)
	}
	w.Notify(context.Background(), note())
	if n := counter(t, w.metrics.failed.WithLabelValues(TypeReputationAlert, "stopped")); n != 1 {
		t.Errorf("a notification after Run returned: dropped %v, want 1", n)
	}
}

func TestWebhook_LogsNeitherTheSecretNorTheURLPath(t *testing.T) {
	r := newReceiver(t, 500, 500)
	s := newSender(t, r.srv.URL+"/services/T0KEN-IN-PATH", func(c *WebhookConfig) { c.MaxAttempts = 2 })
	s.Notify(context.Background(), note())
	waitFor(t, func() bool {
		return counter(t, s.metrics.failed.WithLabelValues(TypeReputationAlert, "exhausted")) == 1
	})
	s.stop()
	logs := s.logs.String()
	if !strings.Contains(logs, "notification not delivered") {
		t.Fatalf("no failure logged:\n%s", logs)
	}
	for _, leak := range []string{string(secret), "T0KEN-IN-PATH"} {
		if strings.Contains(logs, leak) {
			t.Errorf("the log holds %q:\n%s", leak, logs)
		}
	}
}

func TestNewWebhook_ReportsEveryConfigProblem(t *testing.T) {
	_, err := NewWebhook(WebhookConfig{URL: "ftp://x", Secret: []byte("short"), MaxAttempts: -1, Timeout: -time.Second, MinBackoff: time.Hour, MaxBackoff: time.Minute})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`URL: scheme "ftp"`, "Secret: is 5 bytes, at least 32", "MaxAttempts", "Timeout", "MaxBackoff"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err, want)
		}
	}
	_, err = NewWebhook(WebhookConfig{URL: "https://user:pw@example.org/x", Secret: secret})
	if err == nil || strings.Contains(err.Error(), "pw") {
		t.Errorf("URL with user info: %v", err)
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := strings.Repeat("s", 40)
	got, err := ReadSecretFile(write("ok", good+"\n", 0o600))
	if err != nil || string(got) != good {
		t.Fatalf("ReadSecretFile = %q, %v", got, err)
	}
	for name, tc := range map[string]struct {
		path string
		want string
	}{
		"short":          {write("short", "tooshort\n", 0o600), "at least 32"},
		"world-readable": {write("world", good, 0o644), "readable by other users"},
		"missing":        {filepath.Join(dir, "none"), "no such file"},
		"directory":      {dir, "not a regular file"},
	} {
		_, err := ReadSecretFile(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), good) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
