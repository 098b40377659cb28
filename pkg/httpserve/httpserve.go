// Package httpserve runs nhid's HTTPS endpoints (the relying-party
// endpoints, the SPIFFE bundle endpoint) until a context ends: one place
// for their limits against slow or greedy clients and for the graceful
// stop.
package httpserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Config describes one HTTPS endpoint.
type Config struct {
	// Name says what is served, in errors ("bundle endpoint").
	Name    string
	Handler http.Handler
	// TLS is the server's TLS configuration (certificates, client auth).
	TLS *tls.Config
	// Log receives net/http's own complaints (bad handshakes) at Debug.
	Log *slog.Logger
	// ReadTimeout bounds reading a whole request; IdleTimeout a kept-alive
	// connection's wait for the next one.
	ReadTimeout, IdleTimeout time.Duration
	// ShutdownTimeout bounds the graceful stop; then connections are cut.
	ShutdownTimeout time.Duration
}

// Header and write limits every endpoint shares.
const (
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 30 * time.Second
	maxHeaderBytes    = 16 << 10
)

// ServeTLS serves HTTPS on lis until ctx ends, then stops gracefully
// within c.ShutdownTimeout. It returns nil after a stop caused by ctx.
func ServeTLS(ctx context.Context, lis net.Listener, c Config) error {
	srv := &http.Server{
		Handler:           c.Handler,
		TLSConfig:         c.TLS,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(c.Log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(lis, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s on %s: %w", c.Name, lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s on %s: %w", c.Name, lis.Addr(), err)
	}
	return nil
}
