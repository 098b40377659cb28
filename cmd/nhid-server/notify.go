package main

import (
	"net/url"
	"time"

	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/server"
)

// maxWebhookTimeout bounds one webhook attempt.
const maxWebhookTimeout = 5 * time.Minute

// notifySettings configure owner notifications (docs/notifications.md).
type notifySettings struct {
	// Webhook is the default route: it receives what no route takes.
	Webhook webhookSettings `yaml:"webhook"`
	// Routes send some owners' notifications to their own webhooks; the
	// first that matches a notification takes it.
	Routes []routeSettings `yaml:"routes"`
}

type webhookSettings struct {
	URL         string `yaml:"url"`
	SecretFile  string `yaml:"secret_file"`
	Timeout     string `yaml:"timeout"`
	MaxAttempts int    `yaml:"max_attempts"`
}

// routeSettings are one entry of notify.routes.
type routeSettings struct {
	// Name labels the route's metrics and logs; default route-<index>.
	Name string `yaml:"name"`
	// Owners are exact owners or globs with '*' (notify.OwnerPattern).
	Owners []string `yaml:"owners"`
	// Types restricts the route to these notification types; empty: all.
	Types   []string        `yaml:"types"`
	Webhook webhookSettings `yaml:"webhook"`
}

// notifyConfig converts the notify section; secret files are read once
// here to report a problem with its path (the server reads them again).
func notifyConfig(errs *config.Errors, path string, n notifySettings) server.NotifyConfig {
	var out server.NotifyConfig
	wh, p := n.Webhook, config.Join(path, "webhook")
	switch {
	case wh.URL != "":
		out.Webhook = webhookConfig(errs, p, wh)
	case wh != (webhookSettings{}):
		errs.Addf(config.Join(p, "url"), "required when other webhook settings are given")
	}
	out.Routes = routesConfig(errs, config.Join(path, "routes"), n.Routes)
	return out
}

// webhookConfig converts the settings of one webhook, the default or a
// route's: both are checked alike.
func webhookConfig(errs *config.Errors, p string, wh webhookSettings) server.WebhookConfig {
	u, err := url.Parse(wh.URL)
	switch {
	case wh.URL == "":
		errs.Addf(config.Join(p, "url"), "required: where this route's notifications are posted")
	case err != nil:
		errs.Addf(config.Join(p, "url"), "not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		errs.Addf(config.Join(p, "url"), "scheme %q is not http or https", u.Scheme)
	case u.Host == "":
		errs.Addf(config.Join(p, "url"), "has no host")
	case u.User != nil:
		errs.Addf(config.Join(p, "url"), "may not hold user info")
	}
	if wh.SecretFile == "" {
		errs.Addf(config.Join(p, "secret_file"), "required with url: the HMAC key receivers check signatures with")
	} else if _, err := notify.ReadSecretFile(wh.SecretFile); err != nil {
		errs.Addf(config.Join(p, "secret_file"), "%v", err)
	}
	return server.WebhookConfig{
		URL: wh.URL, SecretFile: wh.SecretFile,
		Timeout:     ttl(errs, config.Join(p, "timeout"), wh.Timeout, time.Second, maxWebhookTimeout),
		MaxAttempts: bounded(errs, config.Join(p, "max_attempts"), wh.MaxAttempts, notify.MaxMaxAttempts),
	}
}

// routesConfig converts notify.routes, naming unnamed routes
// route-<index>.
func routesConfig(errs *config.Errors, path string, in []routeSettings) []server.NotifyRoute {
	if len(in) > notify.MaxRoutes {
		errs.Addf(path, "%d routes, at most %d allowed", len(in), notify.MaxRoutes)
		return nil
	}
	var out []server.NotifyRoute
	names := make(map[string]int, len(in))
	for i, r := range in {
		p := config.Index(path, i)
		name, how := r.Name, ""
		if name == "" {
			name, how = notify.DefaultRouteName(i), " (this route's default name)"
		}
		if err := notify.CheckRouteName(name); err != nil {
			errs.Addf(config.Join(p, "name"), "%v", err)
		} else if j, dup := names[name]; dup {
			errs.Addf(config.Join(p, "name"), "%q%s is already the name of %s", name, how, config.Index(path, j))
		} else {
			names[name] = i
		}
		out = append(out, server.NotifyRoute{
			Name: name, Owners: ownerPatterns(errs, config.Join(p, "owners"), r.Owners),
			Types: notifyTypes(errs, config.Join(p, "types"), r.Types), Webhook: webhookConfig(errs, config.Join(p, "webhook"), r.Webhook),
		})
	}
	return out
}

func ownerPatterns(errs *config.Errors, path string, in []string) []string {
	switch {
	case len(in) == 0:
		errs.Addf(path, "at least one owner pattern required (\"*\" matches every owner)")
	case len(in) > notify.MaxRouteOwners:
		errs.Addf(path, "%d patterns, at most %d allowed", len(in), notify.MaxRouteOwners)
	}
	for i, s := range in {
		if _, err := notify.ParseOwnerPattern(s); err != nil {
			errs.Addf(config.Index(path, i), "%v", err)
		}
	}
	return in
}

func notifyTypes(errs *config.Errors, path string, in []string) []string {
	if len(in) == 0 {
		return nil // every type
	}
	for i, typ := range in {
		if err := notify.CheckType(typ); err != nil {
			errs.Addf(config.Index(path, i), "%v", err)
		}
	}
	return in
}
