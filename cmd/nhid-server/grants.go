package main

import (
	"context"
	"github.com/nhid/nhid/pkg/grantreq"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/server"
)

// maxGrantRetention bounds how long ended grants stay listable.
const maxGrantRetention = 90 * 24 * time.Hour

// policySettings locate the grant policy.
type policySettings struct {
	// Path is a policy file or a directory of *.yaml files; empty means
	// no policy, and grant requests are refused.
	Path string `yaml:"path"`
	// Timezone is an IANA zone name for the policy's time.* variables;
	// default UTC.
	Timezone string `yaml:"timezone"`
}

// grantSettings bound grants.
type grantSettings struct {
	MaxTTL    string `yaml:"max_ttl"`
	Retention string `yaml:"retention"`
}

// relyingPartySettings place the /introspect and /jwks endpoints.
type relyingPartySettings struct {
	// Address is HOST:PORT; "" disables the endpoints.
	Address string `yaml:"address"`
}

// policyConfig converts the policy section: the path must exist and the
// time zone must be known.
func policyConfig(errs *config.Errors, path string, p policySettings) server.PolicyConfig {
	var out server.PolicyConfig
	if p.Path != "" {
		if _, err := os.Stat(p.Path); err != nil {
			errs.Addf(config.Join(path, "path"), "%v", err)
		}
		out.Path = p.Path
	}
	if p.Timezone != "" {
		loc, err := time.LoadLocation(p.Timezone)
		if err != nil {
			errs.Addf(config.Join(path, "timezone"), "%q is not a known time zone: %v", p.Timezone, err)
		}
		out.Location = loc
	}
	return out
}

// grantsConfig converts the grants section.
func grantsConfig(errs *config.Errors, path string, g grantSettings) server.GrantsConfig {
	return server.GrantsConfig{
		MaxTTL:    ttl(errs, config.Join(path, "max_ttl"), g.MaxTTL, time.Second, grantreq.MaxMaxTTL),
		Retention: ttl(errs, config.Join(path, "retention"), g.Retention, time.Minute, maxGrantRetention),
	}
}

// reloadOnHangup reloads the grant policy on every SIGHUP until ctx ends or
// stop is called. A failed reload keeps the rules in force; the server
// logs why.
func reloadOnHangup(ctx context.Context, srv *server.Server) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				_ = srv.ReloadPolicy()
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		cancel()
		<-done
	}
}
