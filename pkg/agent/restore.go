package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/nhid/nhid/pkg/agent/agentsvid"
	"github.com/nhid/nhid/pkg/agent/entrysync"
	"github.com/nhid/nhid/pkg/agent/manager"
	"github.com/nhid/nhid/pkg/agent/trust"
	"github.com/nhid/nhid/pkg/store/agentcache"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// open loads the persisted state and builds the manager and sync client.
func (a *Agent) open() error {
	met, err := newMetrics(a.reg)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.metrics = met
	if err := a.loadTrust(); err != nil {
		return err
	}
	cache, err := agentcache.Open(filepath.Join(a.cfg.DataDir, agentcache.FileName), agentcache.Options{Log: a.log})
	if err != nil {
		return err
	}
	a.cache = cache
	a.loadSVID()
	if a.svidSrc.Get() == nil {
		// The cache holds what was synced for the identity in the SVID
		// file; without that identity it may be another node's, or an
		// evicted one's, and must not be served.
		if err := a.cache.Reset(); err != nil {
			a.closeCache()
			return fmt.Errorf("empty the agent cache: %w", err)
		}
	}
	st, err := a.loadCache()
	if err != nil {
		a.closeCache()
		return err
	}
	if err := a.build(st); err != nil {
		a.closeCache()
		return err
	}
	return nil
}

func (a *Agent) closeCache() {
	if a.cache == nil {
		return
	}
	if err := a.cache.Close(); err != nil {
		a.log.Error("closing the agent cache failed", telemetry.Error, err)
	}
	a.cache = nil
}

// loadCache reads the cache. A corrupt cache is reported and emptied: the
// server can send everything again, whereas serving from a damaged file
// could hand out the wrong identity.
func (a *Agent) loadCache() (*agentcache.State, error) {
	st, err := a.cache.Load()
	if errors.Is(err, agentcache.ErrCorrupt) {
		a.log.Error("the agent cache is corrupt; emptying it and syncing everything again",
			telemetry.Path, a.cache.Path(), telemetry.Error, err)
		if err := a.cache.Reset(); err != nil {
			return nil, fmt.Errorf("reset corrupt agent cache: %w", err)
		}
		return &agentcache.State{}, nil
	}
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (a *Agent) build(st *agentcache.State) error {
	m, err := manager.New(manager.Config{
		TrustDomain:       a.cfg.TrustDomain,
		Minter:            a.conn,
		Store:             a.cache,
		KeyType:           a.cfg.KeyType,
		MaxPreMintedSVIDs: a.cfg.MaxPreMintedSVIDs,
		Log:               a.log.With(telemetry.Component, "manager"),
		Clock:             a.clock,
		Metrics:           a.reg,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.manager = m
	if st.Bundle != nil {
		if b, err := trust.FromProto(a.cfg.TrustDomain, st.Bundle); err != nil {
			a.log.Warn("ignoring the cached bundle", telemetry.Error, err)
		} else {
			m.SetBundle(b)
			a.restored.Store(st.Revision > 0)
		}
	}
	fed := a.restoreFederated(st.FederatedBundles)
	m.SetFederatedBundles(fed)
	kept := m.Load(st)
	a.log.Info("agent cache loaded", telemetry.Count, len(st.Entries), "svids", kept, telemetry.Revision, st.Revision,
		"federated_bundles", len(fed))
	a.sync, err = entrysync.New(entrysync.Config{
		TrustDomain: a.cfg.TrustDomain,
		Syncer:      a.conn,
		Cache:       a.cache,
		Target:      m,
		Initial:     st,
		OnBundle:    func(b *spiffebundle.Bundle) { a.applyBundle(b, nil) },
		Log:         a.log.With(telemetry.Component, "sync"),
		Clock:       a.clock,
		Metrics:     a.reg,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// restoreFederated converts the cached federated bundles, so a restarted
// agent serves them while the server is unreachable. One that no longer
// converts is left out with a warning; the next sync brings the set again.
func (a *Agent) restoreFederated(cached []*typesv1.Bundle) []*spiffebundle.Bundle {
	out := make([]*spiffebundle.Bundle, 0, len(cached))
	for _, pb := range cached {
		b, err := trust.FederatedFromProto(a.cfg.TrustDomain, pb)
		if err != nil {
			a.log.Warn("ignoring a cached federated bundle", telemetry.TrustDomain, pb.GetTrustDomain(), telemetry.Error, err)
			continue
		}
		out = append(out, b)
	}
	return out
}

// loadTrust sets the bundle the server is verified with: the one kept in
// the data dir, else the bootstrap bundle file, else none (insecure
// bootstrap).
func (a *Agent) loadTrust() error {
	path := filepath.Join(a.cfg.DataDir, bundleFile)
	if _, err := os.Stat(path); err != nil {
		path = a.cfg.TrustBundleFile
	}
	if path == "" {
		return nil
	}
	xb, err := trust.ReadPEM(a.cfg.TrustDomain, path)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.bundleSrc.Set(spiffebundle.FromX509Bundle(xb))
	return nil
}

// loadSVID restores the agent SVID kept in the data dir, if it is still
// usable, so a restart does not attest again.
func (a *Agent) loadSVID() {
	s, err := agentsvid.Load(a.cfg.DataDir)
	switch {
	case err != nil:
		a.log.Warn("ignoring the stored agent SVID", telemetry.Error, err)
		return
	case s == nil:
		return
	case s.ID.TrustDomain() != a.cfg.TrustDomain:
		a.log.Warn("ignoring the stored agent SVID of another trust domain", telemetry.SPIFFEID, s.ID.String())
		return
	case !a.clock.Now().Before(s.Certificates[0].NotAfter):
		a.log.Info("the stored agent SVID has expired; attesting again", telemetry.SPIFFEID, s.ID.String())
		return
	}
	a.svidSrc.Set(s)
	a.metrics.svidExpiry.Set(float64(s.Certificates[0].NotAfter.Unix()))
	a.log.Info("reusing the stored agent SVID", telemetry.SPIFFEID, s.ID.String(),
		telemetry.ExpiresAt, s.Certificates[0].NotAfter)
}

// applyBundle adopts a bundle newer than the one held: TLS trust, the
// bundle.pem kept in the data dir and, when it came with an SVID rather
// than from the sync (p != nil), the cache and the manager.
func (a *Agent) applyBundle(b *spiffebundle.Bundle, p *typesv1.Bundle) {
	a.bundleMu.Lock()
	defer a.bundleMu.Unlock()
	if cur := a.bundleSrc.Get(); cur != nil {
		curSeq, ok1 := cur.SequenceNumber()
		newSeq, ok2 := b.SequenceNumber()
		if ok1 && ok2 && newSeq < curSeq {
			return
		}
		if cur.Equal(b) {
			return
		}
	}
	a.bundleSrc.Set(b)
	if err := trust.WritePEM(filepath.Join(a.cfg.DataDir, bundleFile), b, a.cfg.TrustDomain); err != nil {
		a.log.Error("persisting the trust bundle failed", telemetry.Error, err)
	}
	if p != nil {
		a.manager.SetBundle(b)
		if err := a.cache.Apply(agentcache.Change{Bundle: p}); err != nil {
			a.log.Error("persisting the trust bundle to the cache failed", telemetry.Error, err)
		}
	}
}
