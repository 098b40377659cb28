package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nhid/nhid/pkg/telemetry"
)

// readyErr says why the agent is not ready, or nil.
func (a *Agent) readyErr() error {
	switch {
	case !a.serving.Load():
		return errors.New("the Workload API is not serving yet")
	case !a.manager.HasBundle():
		return errors.New("no trust bundle yet")
	}
	select {
	case <-a.sync.Synced():
		return nil
	default:
	}
	if a.restored.Load() {
		return nil
	}
	return errors.New("waiting for the first sync with the server")
}

// watchReady closes Ready once the agent is ready, and Synced once the
// first sync has completed.
func (a *Agent) watchReady(ctx context.Context) {
	if a.readyErr() == nil {
		a.markReady()
	}
	select {
	case <-ctx.Done():
	case <-a.sync.Synced():
		close(a.synced)
		a.markReady()
	}
}

func (a *Agent) markReady() {
	a.readyOnce.Do(func() {
		a.log.Info("nhid-agent ready")
		close(a.ready)
	})
}

// startHealth serves /healthz, /readyz and /metrics, if configured.
func (a *Agent) startHealth() (*http.Server, error) {
	if a.cfg.HealthAddress == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", a.cfg.HealthAddress)
	if err != nil {
		return nil, fmt.Errorf("health server: %w", err)
	}
	addr := lis.Addr()
	a.healthAddr.Store(&addr)
	srv := &http.Server{
		Handler:           telemetry.NewHTTPHandler(a.gatherer, a.readyErr),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("health server failed", telemetry.Error, err)
		}
	}()
	return srv, nil
}

func (a *Agent) stopHealth(srv *http.Server) {
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
}
