package notify

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Defaults of WebhookConfig.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultMaxAttempts  = 8
	DefaultMaxAge       = time.Hour
	DefaultQueueSize    = 1000
	DefaultWorkers      = 2
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	DefaultDrainTimeout = 10 * time.Second

	// MaxMaxAttempts bounds the attempts per notification.
	MaxMaxAttempts = 100
)

// Body is the JSON a webhook delivery posts.
type Body struct {
	// ID is the notification's UUID, also in HeaderDelivery.
	ID   string `json:"id"`
	Type string `json:"type"`
	// Time is when the notification was made (RFC 3339), not when this
	// attempt was sent.
	Time    string         `json:"time"`
	Owner   string         `json:"owner"`
	Subject string         `json:"subject"`
	Data    map[string]any `json:"data"`
}

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// URL receives the POSTs; http or https, without user info. Required.
	// Only its scheme and host are ever logged: the path of many
	// webhook services holds a token.
	URL string
	// Secret keys the HMAC signature; at least MinSecretBytes. Required;
	// ReadSecretFile reads one.
	Secret []byte
	// Timeout bounds one attempt; default 10s.
	Timeout time.Duration
	// MaxAttempts bounds the attempts per notification; default 8.
	MaxAttempts int
	// MaxAge: a notification older than this is not retried; default 1h.
	MaxAge time.Duration
	// QueueSize bounds the notifications waiting; more are dropped (and
	// counted); default 1000.
	QueueSize int
	// Workers deliver concurrently; default 2.
	Workers int
	// MinBackoff and MaxBackoff bound the exponential, jittered wait
	// between attempts; defaults 1s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// DrainTimeout bounds how long Run keeps delivering what is queued
	// after its context ended; default 10s.
	DrainTimeout time.Duration
	// TLS, if set, is the client's TLS configuration (private CAs).
	TLS *tls.Config
	// Log defaults to discarding.
	Log *slog.Logger
	// Clock stamps notifications; default the wall clock.
	Clock clock.Clock
	// Metrics, if set, receives the nhid_notify_* collectors.
	Metrics prometheus.Registerer
}

// Webhook posts notifications as signed JSON to one URL, in the
// background, retrying with backoff; it implements Notifier. Run delivers
// until its context ends, then drains the queue.
type Webhook struct {
	cfg     WebhookConfig
	target  string // scheme://host, for logs
	log     *slog.Logger
	client  *http.Client
	metrics *webhookMetrics

	running atomic.Bool
	mu      sync.RWMutex
	closed  bool
	queue   chan delivery
}

// delivery is one notification on its way.
type delivery struct {
	id      string
	typ     string
	created time.Time
	body    []byte
}

var _ Notifier = (*Webhook)(nil)

// NewWebhook checks cfg, reporting every problem at once.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	target, err := cfg.setDefaults()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.TLS
	tr.MaxIdleConnsPerHost = cfg.Workers
	w := &Webhook{
		cfg:    cfg,
		target: target,
		log:    cfg.Log.With(telemetry.Component, "notify", telemetry.Address, target),
		client: &http.Client{
			Transport: tr,
			Timeout:   cfg.Timeout,
			// A redirect could carry the signed body to another host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		queue: make(chan delivery, cfg.QueueSize),
	}
	w.metrics = newWebhookMetrics(cfg.Metrics, func() float64 { return float64(len(w.queue)) })
	return w, nil
}

func (cfg *WebhookConfig) setDefaults() (string, error) {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("webhook config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	target := ""
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		fail("URL", "required")
	case err != nil:
		fail("URL", "not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		fail("URL", "scheme %q is not http or https", u.Scheme)
	case u.Host == "":
		fail("URL", "has no host")
	case u.User != nil:
		fail("URL", "may not hold user info: put credentials in the signature secret")
	default:
		target = u.Scheme + "://" + u.Host
	}
	if len(cfg.Secret) < MinSecretBytes {
		fail("Secret", "is %d bytes, at least %d required", len(cfg.Secret), MinSecretBytes)
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Timeout", &cfg.Timeout, DefaultTimeout}, {"MaxAge", &cfg.MaxAge, DefaultMaxAge},
		{"MinBackoff", &cfg.MinBackoff, DefaultMinBackoff}, {"MaxBackoff", &cfg.MaxBackoff, DefaultMaxBackoff},
		{"DrainTimeout", &cfg.DrainTimeout, DefaultDrainTimeout},
	}
	for _, d := range durations {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			fail(d.name, "%v is negative", *d.v)
		}
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		fail("MaxBackoff", "%v is below MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	ints := []struct {
		name     string
		v        *int
		def, max int
	}{
		{"MaxAttempts", &cfg.MaxAttempts, DefaultMaxAttempts, MaxMaxAttempts},
		{"QueueSize", &cfg.QueueSize, DefaultQueueSize, 1 << 20},
		{"Workers", &cfg.Workers, DefaultWorkers, 64},
	}
	for _, n := range ints {
		switch {
		case *n.v == 0:
			*n.v = n.def
		case *n.v < 0 || *n.v > n.max:
			fail(n.name, "%d is not within 1 to %d", *n.v, n.max)
		}
	}
	cfg.Log = telemetry.OrDiscard(cfg.Log)
	cfg.Clock = clock.OrReal(cfg.Clock)
	return target, errors.Join(errs...)
}

// Notify queues n for delivery and returns at once. A full queue, a
// stopped sender or data that is not JSON drops n, with a log line and a
// metric.
func (w *Webhook) Notify(ctx context.Context, n Notification) {
	now := w.cfg.Clock.Now()
	d := delivery{id: uuid.NewString(), typ: n.Type, created: now}
	body, err := json.Marshal(Body{
		ID: d.id, Type: n.Type, Time: now.UTC().Format(time.RFC3339), Owner: n.Owner, Subject: n.Subject, Data: n.Data,
	})
	if err != nil {
		w.dropped(ctx, d, "encode", err.Error())
		return
	}
	d.body = body
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.dropped(ctx, d, "stopped", "the sender has stopped")
		return
	}
	select {
	case w.queue <- d:
	default:
		w.dropped(ctx, d, "queue_full", fmt.Sprintf("%d notifications are waiting", cap(w.queue)))
	}
}

func (w *Webhook) dropped(ctx context.Context, d delivery, reason, detail string) {
	w.metrics.failed.WithLabelValues(d.typ, reason).Inc()
	w.log.WarnContext(ctx, "notification dropped", "delivery", d.id, "type", d.typ, telemetry.Reason, reason, "detail", detail)
}

// Run delivers queued notifications until ctx ends; then it stops taking
// new ones and gives each queued one a last attempt, for at most
// DrainTimeout. It returns nil; it may be called once.
func (w *Webhook) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("webhook: Run called twice")
	}
	hard, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	for range w.cfg.Workers {
		wg.Go(func() {
			for d := range w.queue {
				w.deliver(ctx, hard, d)
			}
		})
	}
	<-ctx.Done()
	w.mu.Lock()
	w.closed = true
	left := len(w.queue)
	close(w.queue)
	w.mu.Unlock()
	if left > 0 {
		w.log.Info("delivering queued notifications before stopping", telemetry.Count, left)
	}
	t := time.AfterFunc(w.cfg.DrainTimeout, cancel)
	defer t.Stop()
	wg.Wait()
	return nil
}
