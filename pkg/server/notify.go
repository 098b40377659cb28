package server

import (
	"context"
	"fmt"
	"time"

	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/telemetry"
)

// notifyDrainTimeout bounds how long a stopping server keeps delivering
// queued notifications; it stays within the default ShutdownTimeout.
const notifyDrainTimeout = 5 * time.Second

// NotifyConfig holds the owner notification settings (see pkg/notify).
type NotifyConfig struct {
	// Webhook posts notifications; without a URL they are dropped.
	Webhook WebhookConfig
}

// WebhookConfig configures the notification webhook.
type WebhookConfig struct {
	// URL receives the signed POSTs; "" disables the webhook.
	URL string
	// SecretFile holds the HMAC key (at least 32 bytes, not readable by
	// other users). Required with URL.
	SecretFile string
	// Timeout bounds one attempt; default 10s.
	Timeout time.Duration
	// MaxAttempts bounds the attempts per notification; default 8.
	MaxAttempts int
}

// buildNotifier builds the webhook sender when it has a URL, else
// notify.Discard. The secret is read here, once, and never logged.
func (s *Server) buildNotifier(c *components) error {
	wh := s.cfg.Notify.Webhook
	if wh.URL == "" {
		c.notifier = notify.Discard
		s.log.Info("no notification webhook configured (notify.webhook.url): owners are not notified")
		return nil
	}
	if wh.SecretFile == "" {
		return fmt.Errorf("notification webhook: secret file: required with a URL")
	}
	secret, err := notify.ReadSecretFile(wh.SecretFile)
	if err != nil {
		return fmt.Errorf("notification webhook: %w", err)
	}
	w, err := notify.NewWebhook(notify.WebhookConfig{
		URL: wh.URL, Secret: secret, Timeout: wh.Timeout, MaxAttempts: wh.MaxAttempts,
		DrainTimeout: notifyDrainTimeout, Log: s.log, Clock: s.cfg.Clock, Metrics: s.cfg.Metrics,
	})
	if err != nil {
		return fmt.Errorf("notification webhook: %w", err)
	}
	c.notifier = w
	return nil
}

// runNotifier runs the webhook sender, if there is one, until ctx ends.
func (s *Server) runNotifier(ctx context.Context, c *components, goFn func(func() error)) {
	w, ok := c.notifier.(*notify.Webhook)
	if !ok {
		return
	}
	goFn(func() error { return w.Run(ctx) })
	s.log.Info("notification webhook ready", telemetry.Component, "notify")
}
