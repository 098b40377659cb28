package server

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/nhid/nhid/pkg/federation"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/telemetry"
)

// FederationConfig holds the SPIFFE federation settings
// (docs/federation.md).
type FederationConfig struct {
	// BundleEndpoint publishes this trust domain's bundle to partners.
	BundleEndpoint BundleEndpointConfig
	// Relationships are the partners whose bundles are fetched from their
	// endpoints, by the server that runs the store-wide jobs.
	Relationships []federation.Relationship
}

// BundleEndpointConfig configures the bundle endpoint, which every server
// serves when it has an address.
type BundleEndpointConfig struct {
	// Address is the HTTPS listener, host:port; "" disables the endpoint.
	Address string
	// Profile is federation.ProfileSPIFFE (default: the server's own
	// X.509-SVID) or federation.ProfileWeb (CertFile and KeyFile).
	Profile federation.Profile
	// CertFile and KeyFile hold a Web PKI certificate chain and its key
	// (ProfileWeb only); they are read again when they change.
	CertFile, KeyFile string
	// RefreshHint is published as spiffe_refresh_hint; default
	// federation.DefaultRefreshHint, within federation.MinRefreshInterval
	// and MaxRefreshInterval.
	RefreshHint time.Duration
}

// checkFederation validates the federation settings.
func (cfg *Config) checkFederation() []error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("server config: Federation.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	be := &cfg.Federation.BundleEndpoint
	if be.Address != "" {
		if err := ValidateAddress(be.Address); err != nil {
			fail("BundleEndpoint.Address", "%v", err)
		}
		if be.Profile == "" {
			be.Profile = federation.ProfileSPIFFE
		}
	}
	switch be.Profile {
	case "":
	case federation.ProfileSPIFFE:
		if be.CertFile != "" || be.KeyFile != "" {
			fail("BundleEndpoint.CertFile", "only used with profile %s: %s presents the server's X.509-SVID",
				federation.ProfileWeb, federation.ProfileSPIFFE)
		}
	case federation.ProfileWeb:
		if be.CertFile == "" || be.KeyFile == "" {
			fail("BundleEndpoint.CertFile", "CertFile and KeyFile are required with profile %s", federation.ProfileWeb)
		}
	default:
		fail("BundleEndpoint.Profile", "%q is not %s or %s", be.Profile, federation.ProfileSPIFFE, federation.ProfileWeb)
	}
	if h := be.RefreshHint; h != 0 && (h < federation.MinRefreshInterval || h > federation.MaxRefreshInterval) {
		fail("BundleEndpoint.RefreshHint", "%v is outside %v to %v", h, federation.MinRefreshInterval, federation.MaxRefreshInterval)
	}
	for _, err := range federation.CheckRelationships(cfg.TrustDomain, cfg.Federation.Relationships) {
		errs = append(errs, fmt.Errorf("server config: Federation.%w", err))
	}
	return errs
}

// buildFederationRefresher builds the refresher when relationships are
// configured: their bootstrap bundles and CA files are read here, so a
// bad one stops the server at start.
func (s *Server) buildFederationRefresher(c *components) error {
	if len(s.cfg.Federation.Relationships) == 0 {
		return nil
	}
	r, err := federation.NewRefresher(federation.RefresherConfig{
		TrustDomain: s.cfg.TrustDomain, Relationships: s.cfg.Federation.Relationships, Store: c.store,
		Log: s.log, Clock: s.cfg.Clock, Metrics: s.cfg.Metrics,
	})
	if err != nil {
		return err
	}
	c.fedRefresher = r
	return nil
}

// federationStatus is what the admin API lists; a nil interface without
// relationships.
func (c *components) federationStatus() adminapi.FederationStatus {
	if c.fedRefresher == nil {
		return nil
	}
	return c.fedRefresher
}

// federationLeaderJob is the refresher's part of the store-wide jobs: one
// server fetches partners' bundles for everyone sharing the store.
func (c *components) federationLeaderJob() func(context.Context) error {
	if c.fedRefresher == nil {
		return nil
	}
	return c.fedRefresher.Run
}

// buildBundleEndpoint builds the bundle endpoint when it has an address;
// c.tls must be built.
func (s *Server) buildBundleEndpoint(c *components) error {
	be := s.cfg.Federation.BundleEndpoint
	if be.Address == "" {
		return nil
	}
	h, err := federation.NewHandler(federation.HandlerConfig{
		TrustDomain: s.cfg.TrustDomain, Bundles: c.store, RefreshHint: be.RefreshHint,
		Log: s.log, Clock: s.cfg.Clock, Metrics: s.cfg.Metrics,
	})
	if err != nil {
		return err
	}
	c.fedEndpoint, err = federation.NewEndpoint(federation.EndpointConfig{
		Handler: h, Profile: be.Profile, Certificate: c.tls.Certificate,
		CertFile: be.CertFile, KeyFile: be.KeyFile, Log: s.log,
	})
	return err
}

// listenFederation opens the bundle endpoint's listener when it has an
// address.
func (s *Server) listenFederation(ctx context.Context, c *components) error {
	addr := s.cfg.Federation.BundleEndpoint.Address
	if addr == "" {
		return nil
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("bundle endpoint: listen on %s: %w", addr, err)
	}
	c.fedLis = lis
	a := lis.Addr()
	s.fedAddr.Store(&a)
	return nil
}

// runBundleEndpoint adds the bundle endpoint to the server's jobs.
func (s *Server) runBundleEndpoint(ctx context.Context, c *components, goFn func(func() error)) {
	if c.fedEndpoint == nil {
		return
	}
	goFn(func() error { return c.fedEndpoint.Serve(ctx, c.fedLis) })
	s.log.Info("bundle endpoint ready", telemetry.Address, c.fedLis.Addr().String(),
		"profile", string(s.cfg.Federation.BundleEndpoint.Profile))
}

// FederationAddr is the bundle endpoint's address; nil before Ready or
// when it is disabled.
func (s *Server) FederationAddr() net.Addr { return loadAddr(&s.fedAddr) }
