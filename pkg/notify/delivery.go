package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/nhid/nhid/pkg/telemetry"
)

// maxDrainBytes bounds what is read of a receiver's answer (read only so
// that the connection can be reused).
const maxDrainBytes = 4 << 10

// permanentError is an answer that retrying would not change.
type permanentError struct{ status int }

func (e permanentError) Error() string {
	return fmt.Sprintf("the receiver answered %d %s", e.status, http.StatusText(e.status))
}

// retryableError is a failure that may pass on a later attempt, with the
// wait the receiver asked for (Retry-After), if any.
type retryableError struct {
	err   error
	after time.Duration
}

func (e retryableError) Error() string { return e.err.Error() }

// deliver makes the attempts of one notification: until one succeeds, the
// receiver refuses it for good, MaxAttempts or MaxAge is reached, or the
// sender stops (after ctx ended, a failed attempt is the last).
func (w *Webhook) deliver(ctx, hard context.Context, d delivery) {
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := w.attempt(hard, d)
		w.metrics.latency.Observe(time.Since(start).Seconds())
		if err == nil {
			w.metrics.sent.WithLabelValues(d.typ).Inc()
			w.log.DebugContext(ctx, "notification delivered", "delivery", d.id, "type", d.typ, "attempt", attempt)
			return
		}
		age := w.cfg.Clock.Now().Sub(d.created)
		var reason string
		var retry retryableError
		switch {
		case !errors.As(err, &retry):
			reason = "rejected"
		case hard.Err() != nil || ctx.Err() != nil:
			reason = "stopped"
		case attempt >= w.cfg.MaxAttempts || age >= w.cfg.MaxAge:
			reason = "exhausted"
		}
		if reason != "" {
			w.metrics.failed.WithLabelValues(d.typ, reason).Inc()
			w.log.WarnContext(ctx, "notification not delivered", "delivery", d.id, "type", d.typ,
				"attempts", attempt, telemetry.Reason, reason, telemetry.Error, err.Error())
			return
		}
		w.metrics.retries.Inc()
		wait := w.backoff(attempt, retry.after)
		w.log.DebugContext(ctx, "notification attempt failed; retrying", "delivery", d.id, "attempt", attempt,
			"retry_in", wait, telemetry.Error, err.Error())
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done(): // stopping: one last attempt now
		case <-hard.Done():
		}
		t.Stop()
	}
}

// attempt posts d once, signed now.
func (w *Webhook) attempt(ctx context.Context, d delivery) error {
	ts := strconv.FormatInt(w.cfg.Clock.Now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(d.body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "nhid-server")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderDelivery, d.id)
	req.Header.Set(HeaderSignature, Sign(w.cfg.Secret, ts, d.body))
	resp, err := w.client.Do(req)
	if err != nil {
		// url.Error repeats the URL, whose path may hold a token.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return retryableError{err: fmt.Errorf("post to %s: %w", w.target, err)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainBytes))
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusTooManyRequests || code >= 500:
		return retryableError{err: fmt.Errorf("the receiver answered %s", resp.Status), after: retryAfter(resp.Header.Get("Retry-After"))}
	default:
		return permanentError{status: code}
	}
}

// backoff is the wait before attempt+1: MinBackoff doubled per attempt,
// at most MaxBackoff, with jitter (a random point in its upper half) so
// that servers retrying together spread out; at least what the receiver
// asked for, within MaxBackoff.
func (w *Webhook) backoff(attempt int, asked time.Duration) time.Duration {
	d := w.cfg.MaxBackoff
	if attempt < 32 {
		d = min(w.cfg.MinBackoff<<(attempt-1), w.cfg.MaxBackoff)
	}
	d = d/2 + rand.N(d/2+1)
	return min(max(d, asked), w.cfg.MaxBackoff)
}

// retryAfter parses a Retry-After header given in seconds; 0 otherwise.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(min(n, 24*3600)) * time.Second
}
