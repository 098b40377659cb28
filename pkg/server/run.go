package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/federation"
	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/server/agentapi"
	"github.com/nhid/nhid/pkg/server/relyingparty"
	"github.com/nhid/nhid/pkg/server/servertls"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
)

// components are the parts Run assembles, in the order they are opened.
type components struct {
	store  store.Store
	ca     *ca.CA
	agent  *agentapi.Service
	admin  *adminapi.Service
	tls    *servertls.Source
	health *health.Server
	policy *policy.Engine // nil without a policy
	grants *grant.Service
	rp     *relyingparty.Server // nil when disabled

	// fedRefresher is nil without federation relationships, fedEndpoint
	// without a bundle endpoint address (federation.go).
	fedRefresher *federation.Refresher
	fedEndpoint  *federation.Endpoint

	// Issue #5's components. audit is audit.Discard and notifier
	// notify.Discard until their builders set them; reputation is nil
	// when scores are not tracked (every subject at the baseline).
	audit      audit.Recorder
	notifier   notify.Notifier
	reputation reputation.Tracker
	// auditRun is the audit log's writer (audit.go); nil until built.
	auditRun *auditRun

	agentSrv, adminSrv *grpc.Server
	adminTLSSrv        *grpc.Server // nil without AdminAddress
	httpSrv            *http.Server

	agentLis, adminLis, httpLis, rpLis, adminTLSLis, fedLis net.Listener
}

// Run opens everything, serves until ctx ends or a component fails, then
// shuts down: health goes NOT_SERVING, background jobs stop (ending Sync
// streams), both gRPC servers stop gracefully within ShutdownTimeout (then
// forcibly), and the store is closed. The returned error is nil after a
// clean shutdown on ctx's end. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("server: Run called twice")
	}
	c, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer s.closeStore(c)
	if err := s.listen(ctx, c); err != nil {
		c.closeListeners()
		return err
	}
	defer s.removeAdminSocket()
	return s.serve(ctx, c)
}

// open creates the data directory and opens the store, the CA and the
// services; on failure nothing stays open.
func (s *Server) open(ctx context.Context) (_ *components, err error) {
	if err := ensureDataDir(s.cfg.DataDir, s.log); err != nil {
		return nil, err
	}
	st, err := s.openStore(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = st.Close()
		}
	}()
	c := &components{store: st, health: health.NewServer()}
	if c.ca, err = s.openCA(ctx, st); err != nil {
		return nil, err
	}
	if err := s.buildServices(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

func (s *Server) openCA(ctx context.Context, st store.Store) (*ca.CA, error) {
	cc := s.cfg.CA
	authority, err := ca.New(ctx, ca.Config{
		TrustDomain: s.cfg.TrustDomain, Dir: filepath.Join(s.cfg.DataDir, "ca"),
		KeyType: cc.KeyType, JWTKeyType: cc.JWTKeyType, TTL: cc.TTL, Subject: cc.Subject,
		UpstreamCertFile: cc.UpstreamCertFile, UpstreamKeyFile: cc.UpstreamKeyFile,
		Bundles: st, Clock: s.cfg.Clock, Log: s.log, Metrics: s.cfg.Metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("open CA: %w", err)
	}
	return authority, nil
}

func (s *Server) buildServices(ctx context.Context, c *components) error {
	c.audit, c.notifier = audit.Discard, notify.Discard
	if err := s.buildAudit(c); err != nil {
		return err
	}
	verifiers, err := s.cfg.NodeVerifiers(VerifierDeps{
		TrustDomain: s.cfg.TrustDomain, Store: c.store, Clock: s.cfg.Clock, Log: s.log,
	})
	if err != nil {
		return fmt.Errorf("node attestors: %w", err)
	}
	if err := s.buildNotifier(c); err != nil {
		return err
	}
	if err := s.buildReputation(c); err != nil {
		return err
	}
	if err := s.buildGrants(c); err != nil {
		return err
	}
	if err := s.buildFederationRefresher(c); err != nil {
		return err
	}
	sv := s.cfg.SVID
	c.agent, err = agentapi.New(agentapi.Config{
		TrustDomain: s.cfg.TrustDomain, Store: c.store, CA: c.ca, Verifiers: verifiers,
		Log: s.log, Clock: s.cfg.Clock, Metrics: s.cfg.Metrics,
		AgentSVIDTTL: sv.AgentTTL, DefaultX509TTL: sv.DefaultX509TTL, DefaultJWTTTL: sv.DefaultJWTTTL, MaxJWTTTL: sv.MaxJWTTTL,
		Grants: c.grants, Audit: c.audit, Reputation: c.reputation,
	})
	if err != nil {
		return err
	}
	c.admin, err = adminapi.New(adminapi.Config{
		TrustDomain: s.cfg.TrustDomain, Store: c.store, Log: s.log.With(telemetry.Component, "adminapi"),
		Clock: s.cfg.Clock, DefaultTokenTTL: s.cfg.JoinTokenDefaultTTL,
		Grants: c.grants, Ledger: c.store, Audit: c.audit, Reputation: c.reputationAdmin(),
		Approvals: c.grants, AuditLog: c.auditLog(), Federation: c.federationStatus(),
		BundleRefreshHint: s.cfg.Federation.BundleEndpoint.RefreshHint,
	})
	if err != nil {
		return err
	}
	c.tls, err = servertls.New(servertls.Config{
		TrustDomain: s.cfg.TrustDomain, Signer: c.ca,
		Bundles: servertls.NewBundles(c.store, s.cfg.TrustDomain, s.cfg.Clock),
		Clock:   s.cfg.Clock, Log: s.log,
	})
	if err != nil {
		return err
	}
	if err := s.buildRelyingParty(c); err != nil {
		return err
	}
	if err := s.buildBundleEndpoint(c); err != nil {
		return err
	}
	return c.tls.Rotate(ctx)
}

// serve runs the listeners and jobs until ctx ends or one of them fails.
func (s *Server) serve(ctx context.Context, c *components) error {
	s.buildServers(c)
	s.startAudit(c)
	jobsCtx, stopJobs := context.WithCancel(context.Background())
	defer stopJobs()
	jobs, jobsCtx := errgroup.WithContext(jobsCtx)
	jobs.Go(func() error { return c.ca.Run(jobsCtx) })
	jobs.Go(func() error { return c.tls.Run(jobsCtx) })
	jobs.Go(func() error { return c.agent.Run(jobsCtx) })
	jobs.Go(func() error { return s.runLeaderJobs(jobsCtx, c.store, c.federationLeaderJob()) })
	s.runGrantJobs(jobsCtx, c, jobs.Go)
	s.runBundleEndpoint(jobsCtx, c, jobs.Go)
	s.runReputationJobs(jobsCtx, c, jobs.Go)

	serveErr := make(chan error, 4)
	go func() { serveErr <- serveGRPC("agent API", c.agentSrv, c.agentLis) }()
	go func() { serveErr <- serveGRPC("admin API", c.adminSrv, c.adminLis) }()
	if c.adminTLSSrv != nil {
		go func() { serveErr <- serveGRPC("admin API (mTLS)", c.adminTLSSrv, c.adminTLSLis) }()
		s.log.Info("admin API listening with mutual TLS", telemetry.Address, c.adminTLSLis.Addr().String())
	}
	if c.httpLis != nil {
		go func() { serveErr <- serveHTTP(c.httpSrv, c.httpLis) }()
	}
	c.health.Resume()
	s.readyOnce.Do(func() { close(s.ready) })
	s.log.Info("nhid-server ready", telemetry.TrustDomain, s.cfg.TrustDomain.Name(),
		telemetry.Address, c.agentLis.Addr().String(), "admin_socket", s.cfg.AdminSocket,
		"health_address", s.cfg.HealthAddress)

	var failure error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		failure = err
	case <-jobsCtx.Done():
	}
	s.shutdown(c, stopJobs)
	return errors.Join(failure, jobs.Wait())
}

// shutdown stops serving in the order that loses no work: readiness first,
// then the jobs (which ends Sync streams), then the RPC servers.
func (s *Server) shutdown(c *components, stopJobs context.CancelFunc) {
	s.stopping.Store(true)
	s.log.Info("nhid-server shutting down")
	c.health.Shutdown()
	stopJobs()
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	done := make(chan struct{}, 3)
	go func() { gracefulStop(c.agentSrv, deadline); done <- struct{}{} }()
	go func() { gracefulStop(c.adminSrv, deadline); done <- struct{}{} }()
	if c.adminTLSSrv != nil {
		go func() { gracefulStop(c.adminTLSSrv, deadline); done <- struct{}{} }()
	}
	if c.httpSrv != nil {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		if err := c.httpSrv.Shutdown(ctx); err != nil {
			_ = c.httpSrv.Close()
		}
		cancel()
	}
	<-done
	<-done
	if c.adminTLSSrv != nil {
		<-done
	}
}

// gracefulStop lets in-flight RPCs finish until deadline, then cuts them.
func gracefulStop(srv *grpc.Server, deadline time.Time) {
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		srv.Stop()
		<-stopped
	}
}

func serveGRPC(name string, srv *grpc.Server, lis net.Listener) error {
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve %s on %s: %w", name, lis.Addr(), err)
	}
	return nil
}

func serveHTTP(srv *http.Server, lis net.Listener) error {
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve health on %s: %w", lis.Addr(), err)
	}
	return nil
}

func (s *Server) closeStore(c *components) {
	s.stopAudit(c)
	if err := c.store.Close(); err != nil {
		s.log.Error("close store", telemetry.Error, err.Error())
	}
}

func (s *Server) removeAdminSocket() {
	if err := os.Remove(s.cfg.AdminSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove admin socket", telemetry.Path, s.cfg.AdminSocket, telemetry.Error, err.Error())
	}
}

func (c *components) closeListeners() {
	for _, l := range []net.Listener{c.agentLis, c.adminLis, c.httpLis, c.rpLis, c.adminTLSLis, c.fedLis} {
		if l != nil {
			_ = l.Close()
		}
	}
}
