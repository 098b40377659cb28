package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Agent connections are long-lived and often cross NATs that drop idle
// flows, so the server pings them; agents may ping every 15 s at most.
var (
	agentKeepalive = keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}
	agentEnforce   = keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}
)

// readyTimeout bounds the store probe behind /readyz.
const readyTimeout = 2 * time.Second

// listen opens the agent, admin and health listeners.
func (s *Server) listen(ctx context.Context, c *components) error {
	var lc net.ListenConfig
	var err error
	if c.agentLis, err = lc.Listen(ctx, "tcp", s.cfg.BindAddress); err != nil {
		return fmt.Errorf("agent API: listen on %s: %w", s.cfg.BindAddress, err)
	}
	addr := c.agentLis.Addr()
	s.agentAddr.Store(&addr)
	if err := ensureSocketDir(filepath.Dir(s.cfg.AdminSocket)); err != nil {
		return err
	}
	pl := peercred.ListenConfig{Log: s.log.With(telemetry.Component, "adminapi")}
	if c.adminLis, err = pl.Listen(s.cfg.AdminSocket); err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if s.cfg.HealthAddress != "" {
		if c.httpLis, err = lc.Listen(ctx, "tcp", s.cfg.HealthAddress); err != nil {
			return fmt.Errorf("health: listen on %s: %w", s.cfg.HealthAddress, err)
		}
		haddr := c.httpLis.Addr()
		s.httpAddr.Store(&haddr)
	}
	if err := s.listenAdminTLS(ctx, c); err != nil {
		return err
	}
	if err := s.listenRelyingParty(ctx, c); err != nil {
		return err
	}
	return s.listenFederation(ctx, c)
}

// buildServers assembles both gRPC servers and the HTTP server. Metrics
// wrap logging, which wraps authentication, so refused calls are counted
// and logged too.
func (s *Server) buildServers(c *components) {
	logU, logS := telemetry.LoggingInterceptors(s.log)

	agentMetrics := telemetry.NewGRPCMetrics(s.cfg.Metrics, "agentapi")
	authU, authS := c.agent.AuthInterceptors()
	c.agentSrv = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(c.tls.TLSConfig())),
		grpc.KeepaliveParams(agentKeepalive),
		grpc.KeepaliveEnforcementPolicy(agentEnforce),
		grpc.ChainUnaryInterceptor(agentMetrics.UnaryServerInterceptor(), logU, authU),
		grpc.ChainStreamInterceptor(agentMetrics.StreamServerInterceptor(), logS, authS),
	)
	c.agent.Register(c.agentSrv)
	healthpb.RegisterHealthServer(c.agentSrv, c.health)

	adminMetrics := telemetry.NewGRPCMetrics(s.cfg.Metrics, "adminapi")
	peerU, peerS := adminapi.AuthorizePeer(s.cfg.AdminAllowedUIDs, s.cfg.AdminAllowedGIDs)
	c.adminSrv = grpc.NewServer(
		grpc.Creds(peercred.TransportCredentials()),
		grpc.ChainUnaryInterceptor(adminMetrics.UnaryServerInterceptor(), logU, peerU),
		grpc.ChainStreamInterceptor(adminMetrics.StreamServerInterceptor(), logS, peerS),
	)
	c.admin.Register(c.adminSrv)
	healthpb.RegisterHealthServer(c.adminSrv, c.health)
	s.buildAdminTLS(c, adminMetrics, logU, logS)

	if c.httpLis != nil {
		c.httpSrv = &http.Server{
			Handler:           telemetry.NewHTTPHandler(s.cfg.Gatherer, func() error { return s.readiness(c) }),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
	}
}

// readiness is what /readyz reports: ready once serving, until shutdown,
// while the store answers.
func (s *Server) readiness(c *components) error {
	select {
	case <-s.ready:
	default:
		return errors.New("starting")
	}
	if s.stopping.Load() {
		return errors.New("shutting down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if _, err := c.store.Revision(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// ensureDataDir creates the data directory 0700; an existing one that
// others can enter is reported, since it holds the CA keys.
func ensureDataDir(dir string, log *slog.Logger) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create data dir %s: %w", dir, err)
		}
		return os.Chmod(dir, 0o700)
	case err != nil:
		return fmt.Errorf("data dir %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("data dir %s: not a directory", dir)
	case fi.Mode().Perm()&0o077 != 0:
		log.Warn("data dir is accessible to group or others; chmod 700 it",
			telemetry.Path, dir, "mode", fi.Mode().Perm().String())
	}
	return nil
}

// ensureSocketDir creates the admin socket's directory 0770 when missing:
// the socket itself is 0777, so the directory and the peer-UID check are
// what keep other users out. An existing directory is left as its owner
// set it.
func ensureSocketDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o770); err != nil {
		return fmt.Errorf("create admin socket directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o770); err != nil {
		return fmt.Errorf("chmod admin socket directory %s: %w", dir, err)
	}
	return nil
}
