package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Reasons of nhid_notify_unrouted_total.
const (
	// UnroutedNoRoute: the notification has an owner that no route matches.
	UnroutedNoRoute = "no_route"
	// UnroutedNoOwner: the notification has no owner, and no route took it.
	UnroutedNoOwner = "no_owner"
)

// RouteConfig sends the notifications it matches to a webhook of its own.
type RouteConfig struct {
	// Name labels the route's metrics and log lines (CheckRouteName);
	// default DefaultRouteName(i). Never the URL: label values must stay
	// few and URLs may hold tokens.
	Name string
	// Owners are the route's owner patterns (ParseOwnerPattern); at least
	// one. The route takes a notification whose Owner matches any.
	Owners []string
	// Types, if not empty, restricts the route to these notification
	// types (Types()); empty means every type.
	Types []string
	// Webhook configures the route's sender, with its own secret, queue
	// and retries. The Router sets its Log, Clock and Metrics.
	Webhook WebhookConfig
}

// RouterConfig configures a Router.
type RouterConfig struct {
	// Routes are tried in order; the first that matches takes the
	// notification. At most MaxRoutes.
	Routes []RouteConfig
	// Default, if set, receives the notifications no route takes; without
	// it they are dropped and counted. The Router sets its Log, Clock and
	// Metrics.
	Default *WebhookConfig
	// Log defaults to discarding.
	Log *slog.Logger
	// Clock stamps notifications; default the wall clock.
	Clock clock.Clock
	// Metrics, if set, receives the nhid_notify_* collectors, each
	// sender's labelled route="<name>" (route="default" for Default). It
	// must not also hold the collectors of a Webhook built outside a
	// Router, whose metrics have no route label.
	Metrics prometheus.Registerer
}

// Router sends each notification to the webhook of the first route that
// matches its owner and type, else to the default webhook; it implements
// Notifier. Every route has its own queue, workers and retries, so an
// endpoint that is down delays only its own route. Run runs them all.
type Router struct {
	log      *slog.Logger
	routes   []route
	def      *Webhook
	senders  []*Webhook // every route's and the default's, for Run
	unrouted *prometheus.CounterVec
	running  atomic.Bool
}

type route struct {
	name   string
	owners []OwnerPattern
	types  []string
	w      *Webhook
}

var _ Notifier = (*Router)(nil)

// NewRouter checks cfg, reporting every problem at once, and builds the
// senders.
func NewRouter(cfg RouterConfig) (*Router, error) {
	cfg.Log = telemetry.OrDiscard(cfg.Log)
	cfg.Clock = clock.OrReal(cfg.Clock)
	r := &Router{log: cfg.Log.With(telemetry.Component, "notify")}
	var errs []error
	if len(cfg.Routes) > MaxRoutes {
		errs = append(errs, fmt.Errorf("router config: Routes: %d routes, at most %d allowed", len(cfg.Routes), MaxRoutes))
	}
	seen := make(map[string]int, len(cfg.Routes))
	for i, rc := range cfg.Routes {
		if rc.Name == "" {
			rc.Name = DefaultRouteName(i)
		}
		at := fmt.Sprintf("router config: Routes[%d] (%s)", i, rc.Name)
		if err := CheckRouteName(rc.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s: Name: %w", at, err))
		} else if j, dup := seen[rc.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: Name: already the name of Routes[%d]", at, j))
		} else {
			seen[rc.Name] = i
		}
		rt, rerrs := checkRoute(rc, at)
		errs = append(errs, rerrs...)
		r.routes = append(r.routes, rt)
	}
	if cfg.Default != nil {
		if err := checkWebhook(*cfg.Default); err != nil {
			errs = append(errs, prefixed("router config: Default", err)...)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Built only once everything checked, so that a refused config
	// registers no metrics.
	var err error
	for i := range r.routes {
		if r.routes[i].w, err = r.newSender(cfg.Routes[i].Webhook, r.routes[i].name, cfg); err != nil {
			return nil, err
		}
	}
	if cfg.Default != nil {
		if r.def, err = r.newSender(*cfg.Default, DefaultRouteLabel, cfg); err != nil {
			return nil, err
		}
	}
	r.unrouted = telemetry.NewCounterVec(cfg.Metrics, "notify", "unrouted_total", "Notifications no route took and no default webhook received, by type and reason (no_route, no_owner).", "type", "reason")
	return r, nil
}

// checkRoute checks one route; its sender is built later.
func checkRoute(rc RouteConfig, at string) (route, []error) {
	rt := route{name: rc.Name}
	var errs []error
	switch {
	case len(rc.Owners) == 0:
		errs = append(errs, fmt.Errorf("%s: Owners: at least one owner pattern required (\"*\" matches every owner)", at))
	case len(rc.Owners) > MaxRouteOwners:
		errs = append(errs, fmt.Errorf("%s: Owners: %d patterns, at most %d allowed", at, len(rc.Owners), MaxRouteOwners))
	}
	for j, s := range rc.Owners {
		p, err := ParseOwnerPattern(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: Owners[%d]: %w", at, j, err))
		}
		rt.owners = append(rt.owners, p)
	}
	for j, typ := range rc.Types {
		if err := CheckType(typ); err != nil {
			errs = append(errs, fmt.Errorf("%s: Types[%d]: %w", at, j, err))
		}
	}
	rt.types = slices.Clone(rc.Types)
	if err := checkWebhook(rc.Webhook); err != nil {
		errs = append(errs, prefixed(at, err)...)
	}
	return rt, errs
}

// checkWebhook checks wc as NewWebhook does, without building a sender.
func checkWebhook(wc WebhookConfig) error {
	_, err := wc.setDefaults()
	return err
}

// newSender builds a checked route's webhook with the router's log,
// clock and metrics, labelled by the route's name.
func (r *Router) newSender(wc WebhookConfig, name string, cfg RouterConfig) (*Webhook, error) {
	wc.Log = cfg.Log.With("route", name)
	wc.Clock = cfg.Clock
	wc.Metrics = nil
	if cfg.Metrics != nil {
		wc.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"route": name}, cfg.Metrics)
	}
	w, err := NewWebhook(wc)
	if err != nil {
		return nil, fmt.Errorf("router config: route %s: %w", name, err) // not reached: checkWebhook ran first
	}
	r.senders = append(r.senders, w)
	return w, nil
}

// prefixed puts prefix before each of the problems err joins.
func prefixed(prefix string, err error) []error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, len(list))
	for i, e := range list {
		out[i] = fmt.Errorf("%s: %w", prefix, e)
	}
	return out
}

// matches reports whether the route takes n.
func (rt *route) matches(n Notification) bool {
	if len(rt.types) > 0 && !slices.Contains(rt.types, n.Type) {
		return false
	}
	return slices.ContainsFunc(rt.owners, func(p OwnerPattern) bool { return p.Match(n.Owner) })
}

// Notify queues n on the sender of the first route that matches it, or
// of the default webhook, and returns at once. With neither, n is
// dropped, counted in nhid_notify_unrouted_total and logged at Debug
// level by type and owner.
func (r *Router) Notify(ctx context.Context, n Notification) {
	for i := range r.routes {
		if r.routes[i].matches(n) {
			r.routes[i].w.Notify(ctx, n)
			return
		}
	}
	if r.def != nil {
		r.def.Notify(ctx, n)
		return
	}
	reason := UnroutedNoRoute
	if n.Owner == "" {
		reason = UnroutedNoOwner
	}
	r.unrouted.WithLabelValues(n.Type, reason).Inc()
	r.log.DebugContext(ctx, "notification not routed: no route matches and there is no default webhook",
		"type", n.Type, "owner", n.Owner, telemetry.Reason, reason)
}

// Run runs every route's sender until ctx ends; each then drains its own
// queue, all at once, so stopping takes at most the longest
// DrainTimeout. It returns when every sender has returned; it may be
// called once.
func (r *Router) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("notify router: Run called twice")
	}
	errs := make([]error, len(r.senders))
	var wg sync.WaitGroup
	for i, w := range r.senders {
		wg.Go(func() { errs[i] = w.Run(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
