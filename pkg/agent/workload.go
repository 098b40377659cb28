package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/nhid/nhid/pkg/agent/grants"
	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/nhid/nhid/pkg/workloadapi"
)

// workloadServer is the Workload API being served.
type workloadServer struct {
	srv    *grpc.Server
	grants *grants.Handler
	done   chan struct{}
}

// startWorkloadAPI serves the SPIFFE Workload API on the agent socket:
// callers identified by the kernel, attested by the workload attestor,
// every call checked for the security header, counted and logged, and
// attestation failures and refused callers reported to the server.
func (a *Agent) startWorkloadAPI() (*workloadServer, error) {
	h, err := workloadapi.New(workloadapi.Config{
		Manager:   a.manager,
		Attestor:  a.cfg.WorkloadAttestor,
		Log:       a.log,
		Metrics:   a.reg,
		OnRefused: a.events.onRefused,
	})
	if err != nil {
		return nil, fmt.Errorf("workload API: %w", err)
	}
	gh, err := a.newGrantsHandler()
	if err != nil {
		return nil, err
	}
	lis, err := peercred.ListenConfig{Log: a.log}.Listen(a.cfg.SocketPath)
	if err != nil {
		return nil, fmt.Errorf("workload API: %w", err)
	}
	srv := newWorkloadGRPCServer(a.reg, a.events)
	h.Register(srv)
	gh.Register(srv) // the Grant API shares the socket, attestation and header check
	// The Workload Endpoint spec (section 7) asks endpoints to support
	// server reflection, so clients can discover the services rendered;
	// reflection calls need the security header like any other. A client
	// holding a reflection stream open at shutdown delays the stop by at
	// most shutdownTimeout, like any other call in flight.
	reflection.Register(srv)
	ws := &workloadServer{srv: srv, grants: gh, done: make(chan struct{})}
	go func() {
		defer close(ws.done)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			a.log.Error("workload API server failed", telemetry.Error, err)
		}
	}()
	a.serving.Store(true)
	return ws, nil
}

// newWorkloadGRPCServer builds the Workload API's gRPC server. It has no
// logging interceptor: the handler logs every request once, with the
// caller's pid, uid and gid, and a second line per request (one per
// closed stream, the common case) would only double the volume. The
// events interceptors come after the security header check: a call
// without the header is not a workload's attempt at anything.
func newWorkloadGRPCServer(reg prometheus.Registerer, events *eventReporter) *grpc.Server {
	secUnary, secStream := workloadapi.SecurityHeaderInterceptors()
	evUnary, evStream := events.interceptors()
	gm := telemetry.NewGRPCMetrics(reg, "agent")
	return grpc.NewServer(append(workloadapi.ServerOptions(),
		grpc.Creds(peercred.TransportCredentials()),
		grpc.ChainUnaryInterceptor(gm.UnaryServerInterceptor(), secUnary, evUnary),
		grpc.ChainStreamInterceptor(gm.StreamServerInterceptor(), secStream, evStream),
	)...)
}

// stopWorkloadAPI ends every subscription and grant request, so that open
// streams finish (clients reconnect), waits for calls in flight up to
// shutdownTimeout, and removes the socket.
func (a *Agent) stopWorkloadAPI(ws *workloadServer) {
	a.serving.Store(false)
	a.manager.CloseSubscriptions()
	ws.grants.Stop()
	stopped := make(chan struct{})
	go func() {
		ws.srv.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(shutdownTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		a.log.Warn("Workload API calls still running after the shutdown timeout; ending them")
		ws.srv.Stop()
		<-stopped
	}
	<-ws.done
	if err := os.Remove(a.cfg.SocketPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("removing the Workload API socket failed", telemetry.Path, a.cfg.SocketPath, telemetry.Error, err)
	}
}
