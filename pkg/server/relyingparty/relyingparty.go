// Package relyingparty serves the HTTPS endpoints relying parties use to
// check nhid's Transaction Tokens: POST /introspect (RFC 7662 token
// introspection, which reads the grant record on every call so that a
// revocation or release is visible at once), GET /jwks (the trust
// domain's JWT keys, which verify Txn-Tokens and JWT-SVIDs alike) and,
// when reputation is tracked, POST /report (a relying party reports a
// subject's misuse, report.go).
//
// Every connection is mutually authenticated: the server presents its own
// X.509-SVID, and the client must present an X.509-SVID of the trust
// domain, verified against the bundle as the store holds it at each
// handshake and again at each request. Tokens are never logged.
package relyingparty

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/httpserve"
	"github.com/nhid/nhid/pkg/server/servertls"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxBodyBytes    = 64 << 10
	DefaultShutdownTimeout = 5 * time.Second
)

// Paths of the endpoints.
const (
	PathIntrospect = "/introspect"
	PathJWKS       = "/jwks"
)

// verifyTimeout bounds the bundle read behind a handshake's verification,
// which has no context of its own.
const verifyTimeout = 5 * time.Second

// GrantGetter reads grant records; pkg/store/bolt's *Store satisfies it.
type GrantGetter interface {
	GetGrant(ctx context.Context, id string) (*typesv1.Grant, error)
}

// Config configures the relying-party endpoints.
type Config struct {
	// TrustDomain of the server. Required.
	TrustDomain spiffeid.TrustDomain
	// Bundles is the trust domain's bundle: its X.509 authorities verify
	// client certificates, its JWT authorities verify tokens. Required.
	Bundles *servertls.Bundles
	// Certificate returns the server's current X.509-SVID
	// (servertls.Source.Certificate). Required.
	Certificate func() *tls.Certificate
	// Grants reads the grant behind a token. Required.
	Grants GrantGetter
	// Audience is the "aud" every Txn-Token must carry; default the trust
	// domain's SPIFFE ID ("spiffe://example.org").
	Audience string
	// Log defaults to discarding.
	Log *slog.Logger
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Metrics, if set, receives the nhid_relyingparty_* collectors.
	Metrics prometheus.Registerer
	// MaxBodyBytes bounds a request body; default 64 KiB.
	MaxBodyBytes int64
	// ShutdownTimeout bounds the graceful stop of Serve; default 5s.
	ShutdownTimeout time.Duration
	// Reputation, if set, takes misuse reports at POST /report
	// (report.go).
	Reputation Observer
	// ReportRate and ReportBurst bound each reporter's reports; defaults
	// 10 a minute, burst 10.
	ReportRate  rate.Limit
	ReportBurst int
}

// Server is the relying-party endpoints.
type Server struct {
	cfg     Config
	log     *slog.Logger
	keys    *keyCache
	metrics *prometheus.CounterVec
	reports *reports
}

// New checks cfg and builds the endpoints.
func New(cfg Config) (*Server, error) {
	var errs []error
	fail := func(field string) { errs = append(errs, fmt.Errorf("relyingparty config: %s: required", field)) }
	if cfg.TrustDomain.IsZero() {
		fail("TrustDomain")
	}
	if cfg.Bundles == nil {
		fail("Bundles")
	}
	if cfg.Certificate == nil {
		fail("Certificate")
	}
	if cfg.Grants == nil {
		fail("Grants")
	}
	if cfg.ReportRate < 0 || cfg.ReportBurst < 0 {
		errs = append(errs, errors.New("relyingparty config: ReportRate and ReportBurst may not be negative"))
	}
	if cfg.MaxBodyBytes < 0 || cfg.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("relyingparty config: MaxBodyBytes and ShutdownTimeout may not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Audience == "" {
		cfg.Audience = cfg.TrustDomain.ID().String()
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.ReportRate == 0 {
		cfg.ReportRate = DefaultReportRate
	}
	if cfg.ReportBurst == 0 {
		cfg.ReportBurst = DefaultReportBurst
	}
	cfg.Log = telemetry.OrDiscard(cfg.Log).With(telemetry.Component, "relyingparty")
	cfg.Clock = clock.OrReal(cfg.Clock)
	return &Server{
		cfg:     cfg,
		log:     cfg.Log,
		keys:    newKeyCache(cfg.Bundles),
		metrics: telemetry.NewCounterVec(cfg.Metrics, "relyingparty", "introspections_total", "Token introspections by answer (active, inactive).", "answer"),
		reports: newReports(cfg),
	}, nil
}

// Handler routes the endpoints; methods other than POST on /introspect
// and /report and GET (or HEAD) on /jwks get 405 with an Allow header.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathIntrospect, s.introspect)
	mux.HandleFunc("GET "+PathJWKS, s.jwks)
	if s.cfg.Reputation != nil {
		mux.HandleFunc("POST "+PathReport, s.report)
	}
	return mux
}

// TLSConfig is the endpoints' TLS: 1.3 only, the server's current SVID,
// and a client X.509-SVID of the trust domain required and verified
// against the current bundle at every handshake.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := s.cfg.Certificate(); cert != nil {
				return cert, nil
			}
			return nil, errors.New("server SVID not issued yet")
		},
		ClientAuth: tls.RequireAnyClientCert,
		// A resumed session would skip the client certificate check
		// against the bundle as it is now.
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			ctx, cancel := context.WithTimeout(context.Background(), verifyTimeout)
			defer cancel()
			if _, err := s.cfg.Bundles.VerifyX509SVID(ctx, cs.PeerCertificates); err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			return nil
		},
	}
}

// Serve serves HTTPS on lis until ctx ends, then stops gracefully within
// ShutdownTimeout. It returns nil after a stop caused by ctx.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	return httpserve.ServeTLS(ctx, lis, httpserve.Config{
		Name: "relying-party endpoints", Handler: s.Handler(), TLS: s.TLSConfig(), Log: s.log,
		ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ShutdownTimeout: s.cfg.ShutdownTimeout,
	})
}
