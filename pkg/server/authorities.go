package server

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"time"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// bundleUpdater is what the authority pruner needs from the store.
type bundleUpdater interface {
	UpdateBundle(ctx context.Context, trustDomain string, fn func(*typesv1.Bundle) error) (*typesv1.Bundle, error)
}

// authorityPruner removes expired authorities from the trust domain's
// bundle, whichever server published them. Each server removes its own
// when they expire, but a server that is gone for good (a replaced pod
// with a fresh data dir) never will; an expired authority verifies
// nothing, so removing it early changes nothing for anyone.
type authorityPruner struct {
	st    bundleUpdater
	td    string
	clock clock.Clock
	every time.Duration
	log   *slog.Logger
}

// errUnchanged aborts a bundle update that would change nothing, so that
// the sequence number does not move and agents are not woken.
var errUnchanged = errors.New("no expired authority")

func newAuthorityPruner(cfg Config, st bundleUpdater, log *slog.Logger) *authorityPruner {
	return &authorityPruner{
		st: st, td: cfg.TrustDomain.Name(), clock: cfg.Clock, every: cfg.MaintenanceEvery,
		log: log.With(telemetry.Component, "maintenance"),
	}
}

// run prunes every p.every until ctx ends.
func (p *authorityPruner) run(ctx context.Context) error {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		if err := p.prune(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("prune expired bundle authorities", telemetry.Error, err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// prune removes the authorities that expired before now.
func (p *authorityPruner) prune(ctx context.Context) error {
	now := p.clock.Now()
	removed := 0
	_, err := p.st.UpdateBundle(ctx, p.td, func(b *typesv1.Bundle) error {
		removed = 0
		x509s := b.X509Authorities[:0:0]
		for _, a := range b.X509Authorities {
			cert, err := x509.ParseCertificate(a.GetAsn1())
			if err == nil && now.After(cert.NotAfter) {
				removed++
				continue
			}
			x509s = append(x509s, a)
		}
		jwts := b.JwtAuthorities[:0:0]
		for _, a := range b.JwtAuthorities {
			if a.GetExpiresAt() != 0 && now.Unix() > a.GetExpiresAt() {
				removed++
				continue
			}
			jwts = append(jwts, a)
		}
		if removed == 0 {
			return errUnchanged
		}
		b.X509Authorities, b.JwtAuthorities = x509s, jwts
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged):
		return nil
	case err != nil:
		return err
	}
	p.log.Info("removed expired authorities from the bundle", telemetry.Count, removed)
	return nil
}
