package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/nhid/nhid/pkg/httpserve"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Profile is how a bundle endpoint authenticates itself (SPIFFE
// Federation, section 5).
type Profile string

// Profiles.
const (
	// ProfileSPIFFE: the endpoint presents an X.509-SVID, which clients
	// verify against the bundle of its trust domain they already hold.
	ProfileSPIFFE Profile = "https_spiffe"
	// ProfileWeb: the endpoint presents a Web PKI certificate, which
	// clients verify against public (or operator-given) roots.
	ProfileWeb Profile = "https_web"
)

// ParseProfile checks s is a profile.
func ParseProfile(s string) (Profile, error) {
	switch p := Profile(s); p {
	case ProfileSPIFFE, ProfileWeb:
		return p, nil
	}
	return "", fmt.Errorf("%q is not a profile; profiles are %s and %s", s, ProfileSPIFFE, ProfileWeb)
}

// endpointShutdownTimeout bounds the graceful stop of Serve.
const endpointShutdownTimeout = 5 * time.Second

// EndpointConfig configures an Endpoint.
type EndpointConfig struct {
	// Handler serves the document. Required.
	Handler *Handler
	// Profile is ProfileSPIFFE (default) or ProfileWeb.
	Profile Profile
	// Certificate returns the server's current X.509-SVID (ProfileSPIFFE;
	// required there).
	Certificate func() *tls.Certificate
	// CertFile and KeyFile hold the Web PKI certificate chain and key
	// (ProfileWeb; required there). They are read again when they change.
	CertFile, KeyFile string
	// Log defaults to discarding.
	Log *slog.Logger
}

// Endpoint is the bundle endpoint server.
type Endpoint struct {
	handler *Handler
	tls     *tls.Config
	log     *slog.Logger
}

// NewEndpoint checks cfg and builds the endpoint; with ProfileWeb the
// certificate files are loaded now, so a mistake stops the server at start.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	if cfg.Handler == nil {
		return nil, errors.New("bundle endpoint: Handler: required")
	}
	log := telemetry.OrDiscard(cfg.Log).With(telemetry.Component, "federation")
	e := &Endpoint{handler: cfg.Handler, log: log}
	switch cfg.Profile {
	case ProfileSPIFFE, "":
		if cfg.Certificate == nil {
			return nil, errors.New("bundle endpoint: Certificate: required with profile https_spiffe")
		}
		e.tls = spiffeServerTLS(cfg.Certificate)
	case ProfileWeb:
		kp, err := newKeyPair(cfg.CertFile, cfg.KeyFile, log)
		if err != nil {
			return nil, fmt.Errorf("bundle endpoint: %w", err)
		}
		e.tls = intermediateTLS(kp.get)
	default:
		return nil, fmt.Errorf("bundle endpoint: Profile: %q is not %s or %s", cfg.Profile, ProfileSPIFFE, ProfileWeb)
	}
	return e, nil
}

// spiffeServerTLS presents the server's current SVID, so a renewal takes
// effect at the next handshake. No client certificate: the bundle is
// public, and servers MUST NOT require client authentication (SPIFFE
// Federation section 5.2.2.3).
func spiffeServerTLS(cert func() *tls.Certificate) *tls.Config {
	return intermediateTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c := cert(); c != nil {
			return c, nil
		}
		return nil, errors.New("server SVID not issued yet")
	})
}

// intermediateCipherSuites are the TLS 1.2 suites of Mozilla's
// intermediate configuration that Go implements: ECDHE with AEAD only (Go
// has no DHE). TLS 1.3 suites are not configurable and all allowed.
var intermediateCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// intermediateTLS is the server TLS of both profiles: bundle endpoint
// servers MUST adhere to Mozilla's intermediate compatibility (SPIFFE
// Federation section 5), which is TLS 1.2 and 1.3 with the suites above.
// Partners are SPIFFE implementations of every age, not only Go 1.13+.
func intermediateTLS(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: intermediateCipherSuites, GetCertificate: get}
}

// TLSConfig is the endpoint's server TLS configuration.
func (e *Endpoint) TLSConfig() *tls.Config { return e.tls.Clone() }

// Serve serves HTTPS on lis until ctx ends, then stops gracefully. It
// returns nil after a stop caused by ctx.
func (e *Endpoint) Serve(ctx context.Context, lis net.Listener) error {
	return httpserve.ServeTLS(ctx, lis, httpserve.Config{
		Name: "bundle endpoint", Handler: e.handler, TLS: e.TLSConfig(), Log: e.log,
		ReadTimeout: 10 * time.Second, IdleTimeout: time.Minute, ShutdownTimeout: endpointShutdownTimeout,
	})
}
