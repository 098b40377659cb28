package servertls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/svid"
	"github.com/nhid/nhid/pkg/telemetry"
)

// DefaultTTL is the lifetime asked for the server's SVID.
const DefaultTTL = time.Hour

// Retry bounds for a failed renewal; the old certificate is served meanwhile.
const (
	minRetry = time.Second
	maxRetry = time.Minute
)

// X509Signer signs X.509-SVIDs; *ca.CA satisfies it.
type X509Signer interface {
	SignX509SVID(ctx context.Context, p ca.X509Params) ([]*x509.Certificate, error)
}

// Config configures a Source.
type Config struct {
	// TrustDomain of the server. Required.
	TrustDomain spiffeid.TrustDomain
	// Signer issues the server's SVID. Required.
	Signer X509Signer
	// Bundles verifies client certificates. Required.
	Bundles *Bundles
	// KeyType of the server SVID's key; default svid.DefaultKeyType.
	KeyType svid.KeyType
	// TTL asked for each server SVID; default 1h (the CA may cap it).
	TTL time.Duration
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Log defaults to discarding.
	Log *slog.Logger
}

// Source holds the server's current X.509-SVID and builds the agent API's
// TLS configuration around it.
type Source struct {
	cfg  Config
	id   spiffeid.ID
	cert atomic.Pointer[tls.Certificate]
	log  *slog.Logger
}

// New checks cfg. Call Rotate once before serving, then Run.
func New(cfg Config) (*Source, error) {
	var errs []error
	if cfg.TrustDomain.IsZero() {
		errs = append(errs, errors.New("servertls config: TrustDomain: required"))
	}
	if cfg.Signer == nil {
		errs = append(errs, errors.New("servertls config: Signer: required"))
	}
	if cfg.Bundles == nil {
		errs = append(errs, errors.New("servertls config: Bundles: required"))
	}
	if cfg.KeyType == "" {
		cfg.KeyType = svid.DefaultKeyType
	} else if _, err := svid.ParseKeyType(string(cfg.KeyType)); err != nil {
		errs = append(errs, fmt.Errorf("servertls config: KeyType: %w", err))
	}
	switch {
	case cfg.TTL == 0:
		cfg.TTL = DefaultTTL
	case cfg.TTL < time.Minute:
		errs = append(errs, fmt.Errorf("servertls config: TTL: %v is shorter than 1m", cfg.TTL))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	log := telemetry.OrDiscard(cfg.Log).With(telemetry.Component, "servertls")
	return &Source{cfg: cfg, id: agentid.Server(cfg.TrustDomain), log: log}, nil
}

// ID is the SPIFFE ID the server presents.
func (s *Source) ID() spiffeid.ID { return s.id }

// Bundles is the trust bundle source client certificates are verified
// against.
func (s *Source) Bundles() *Bundles { return s.cfg.Bundles }

// Certificate is the current server certificate, nil before the first Rotate.
func (s *Source) Certificate() *tls.Certificate { return s.cert.Load() }

// Rotate signs a new server SVID for a fresh key and serves it from now on.
func (s *Source) Rotate(ctx context.Context) error {
	key, err := svid.GenerateKey(s.cfg.KeyType)
	if err != nil {
		return fmt.Errorf("server SVID key: %w", err)
	}
	chain, err := s.cfg.Signer.SignX509SVID(ctx, ca.X509Params{ID: s.id, PublicKey: key.Public(), TTL: s.cfg.TTL})
	if err != nil {
		return fmt.Errorf("sign server SVID: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	s.cert.Store(cert)
	s.log.Info("server SVID renewed", telemetry.SPIFFEID, s.id.String(),
		telemetry.Serial, chain[0].SerialNumber.Text(16), telemetry.ExpiresAt, chain[0].NotAfter)
	return nil
}

// Run renews the server SVID at half its remaining life until ctx ends,
// retrying failures with backoff while the old certificate stays in use.
func (s *Source) Run(ctx context.Context) error {
	retry := minRetry
	for {
		wait := retry
		if cert := s.cert.Load(); cert != nil {
			wait = max(cert.Leaf.NotAfter.Sub(s.cfg.Clock.Now())/2, minRetry)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := s.Rotate(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error("server SVID renewal failed; retrying", telemetry.Error, err.Error(), "retry_in", retry)
			s.retryAfter(ctx, retry)
			retry = min(retry*2, maxRetry)
			continue
		}
		retry = minRetry
	}
}

func (s *Source) retryAfter(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// TLSConfig is the agent API's server configuration: TLS 1.3 only, the
// current server SVID, and client certificates requested but optional
// (Attest has none) and, when presented, verified against the current
// bundle at every handshake. Which peers may call what is decided above
// TLS, by the agent API's interceptors.
func (s *Source) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := s.cert.Load(); cert != nil {
				return cert, nil
			}
			return nil, errors.New("server SVID not issued yet")
		},
		ClientAuth: tls.RequestClientCert,
		// Resumed sessions would carry a client certificate verified
		// against an older bundle; agents keep connections long anyway.
		SessionTicketsDisabled: true,
		VerifyConnection:       s.verifyConnection,
	}
}

func (s *Source) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), verifyTimeout)
	defer cancel()
	if _, err := s.cfg.Bundles.VerifyX509SVID(ctx, cs.PeerCertificates); err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	return nil
}
