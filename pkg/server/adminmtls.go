package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/telemetry"
)

// listenAdminTLS opens the admin API's mTLS listener when AdminAddress is
// set.
func (s *Server) listenAdminTLS(ctx context.Context, c *components) error {
	if s.cfg.AdminAddress == "" {
		return nil
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", s.cfg.AdminAddress)
	if err != nil {
		return fmt.Errorf("admin API (mTLS): listen on %s: %w", s.cfg.AdminAddress, err)
	}
	c.adminTLSLis = lis
	addr := lis.Addr()
	s.adminAddr.Store(&addr)
	return nil
}

// buildAdminTLS builds the admin API's mTLS server, if it listens: the
// same services as on the admin socket, with the server's SVID, a client
// X.509-SVID required at the handshake and authorised at every call by
// adminapi.AuthorizeSVID. Its calls share the admin API's metrics.
func (s *Server) buildAdminTLS(c *components, m *telemetry.GRPCMetrics, logU grpc.UnaryServerInterceptor, logS grpc.StreamServerInterceptor) {
	if c.adminTLSLis == nil {
		return
	}
	authU, authS := adminapi.AuthorizeSVID(adminapi.SVIDAuthConfig{
		Verifier: c.tls.Bundles(), Entries: c.store, AllowedIDs: s.cfg.AdminAllowedIDs,
		Roles: s.cfg.AdminRoles, Clock: s.cfg.Clock,
	})
	c.adminTLSSrv = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(adminTLSConfig(c.tls.TLSConfig()))),
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor(), logU, authU),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor(), logS, authS),
	)
	c.admin.Register(c.adminTLSSrv)
	healthpb.RegisterHealthServer(c.adminTLSSrv, c.health)
}

// adminTLSConfig turns the agent API's TLS configuration (TLS 1.3, the
// server's SVID, a client certificate verified against the current bundle
// when presented) into the admin listener's: there a client certificate
// is required, so nothing reaches the interceptors unauthenticated.
func adminTLSConfig(base *tls.Config) *tls.Config {
	base.ClientAuth = tls.RequireAnyClientCert
	return base
}

// AdminAddr is the admin API's mTLS address; nil before Ready or when
// AdminAddress is unset.
func (s *Server) AdminAddr() net.Addr { return loadAddr(&s.adminAddr) }
