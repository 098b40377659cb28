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
	// Webhook posts notifications; without a URL they are dropped. With
	// Routes, it receives only what no route takes.
	Webhook WebhookConfig
	// Routes send the notifications of some owners to their own webhooks
	// (docs/notifications.md#routing-by-owner); the first that matches
	// takes a notification. At most notify.MaxRoutes.
	Routes []NotifyRoute
}

// NotifyRoute sends the notifications of the owners it matches to a
// webhook of its own (see notify.RouteConfig).
type NotifyRoute struct {
	// Name labels the route's metrics and logs; default "route-<index>".
	Name string
	// Owners are exact owners or globs where '*' matches any run of
	// characters; case is ignored. At least one.
	Owners []string
	// Types, if set, restricts the route to these notification types.
	Types []string
	// Webhook is the route's endpoint; its URL and SecretFile are required.
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

// buildNotifier builds the router when there are routes, else the
// webhook sender when it has a URL, else notify.Discard. Secrets are read
// here, once, and never logged.
func (s *Server) buildNotifier(c *components) error {
	if len(s.cfg.Notify.Routes) > 0 {
		return s.buildRouter(c)
	}
	wh := s.cfg.Notify.Webhook
	if wh.URL == "" {
		c.notifier = notify.Discard
		s.log.Info("no notification webhook configured (notify.webhook.url): owners are not notified")
		return nil
	}
	cfg, err := s.webhookConfig(wh)
	if err != nil {
		return fmt.Errorf("notification webhook: %w", err)
	}
	cfg.Log, cfg.Clock, cfg.Metrics = s.log, s.cfg.Clock, s.cfg.Metrics
	w, err := notify.NewWebhook(cfg)
	if err != nil {
		return fmt.Errorf("notification webhook: %w", err)
	}
	c.notifier = w
	return nil
}

// buildRouter builds a sender per route, and one for the default
// webhook if it has a URL.
func (s *Server) buildRouter(c *components) error {
	rc := notify.RouterConfig{Log: s.log, Clock: s.cfg.Clock, Metrics: s.cfg.Metrics}
	for i, r := range s.cfg.Notify.Routes {
		wc, err := s.webhookConfig(r.Webhook)
		if err != nil {
			return fmt.Errorf("notification route %d (%s): %w", i, r.Name, err)
		}
		rc.Routes = append(rc.Routes, notify.RouteConfig{Name: r.Name, Owners: r.Owners, Types: r.Types, Webhook: wc})
	}
	if wh := s.cfg.Notify.Webhook; wh.URL != "" {
		wc, err := s.webhookConfig(wh)
		if err != nil {
			return fmt.Errorf("notification webhook: %w", err)
		}
		rc.Default = &wc
	} else {
		s.log.Info("no default notification webhook (notify.webhook.url): owners no route matches are not notified")
	}
	router, err := notify.NewRouter(rc)
	if err != nil {
		return fmt.Errorf("notification routes: %w", err)
	}
	c.notifier = router
	return nil
}

// webhookConfig reads wh's secret and converts it.
func (s *Server) webhookConfig(wh WebhookConfig) (notify.WebhookConfig, error) {
	if wh.SecretFile == "" {
		return notify.WebhookConfig{}, fmt.Errorf("secret file: required with a URL")
	}
	secret, err := notify.ReadSecretFile(wh.SecretFile)
	if err != nil {
		return notify.WebhookConfig{}, err
	}
	return notify.WebhookConfig{
		URL: wh.URL, Secret: secret, Timeout: wh.Timeout, MaxAttempts: wh.MaxAttempts, DrainTimeout: notifyDrainTimeout,
	}, nil
}

// runNotifier runs the webhook sender or router, if there is one, until
// ctx ends; it then drains every queue.
func (s *Server) runNotifier(ctx context.Context, c *components, goFn func(func() error)) {
	switch n := c.notifier.(type) {
	case *notify.Webhook:
		goFn(func() error { return n.Run(ctx) })
		s.log.Info("notification webhook ready", telemetry.Component, "notify")
	case *notify.Router:
		goFn(func() error { return n.Run(ctx) })
		s.log.Info("notification routes ready", telemetry.Component, "notify",
			telemetry.Count, len(s.cfg.Notify.Routes), "default_webhook", s.cfg.Notify.Webhook.URL != "")
	}
}
