// Package workloadapi serves the SPIFFE Workload API (go-spiffe's generated
// SpiffeWorkloadAPIServer) on the agent's Workload Endpoint. It identifies
// the caller from the kernel (pkg/peercred), has it attested, and turns the
// agent cache's state for the caller's selectors (Manager) into Workload API
// messages: X.509-SVIDs, JWT-SVIDs and trust bundles, streamed again on every
// change. It also validates JWT-SVIDs on a workload's behalf.
//
// Errors become gRPC status codes here and only here. A workload never sees
// why it was refused beyond PermissionDenied "no identity issued"; the
// reason is logged.
package workloadapi

import (
	"errors"
	"log/slog"

	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
)

// Config configures a Handler.
type Config struct {
	// Manager is the agent's view of the identities each set of selectors
	// is entitled to. Required.
	Manager Manager
	// Attestor finds a calling process's selectors. Required.
	Attestor Attestor
	// Log receives one line per refused or failed request. Defaults to
	// slog.Default().
	Log *slog.Logger
	// Metrics, if set, receives the nhid_workloadapi_* metrics.
	Metrics prometheus.Registerer
	// OnRefused, if set, is told of every request refused after its
	// caller was attested (refused.go). It runs on the request's path
	// and must not block.
	OnRefused func(Refusal)
}

// Handler implements the SPIFFE Workload API. The WIT-SVID profile is not
// supported: its RPCs answer Unimplemented, as the specification requires.
type Handler struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	manager  Manager
	attestor Attestor
	log      *slog.Logger
	metrics  *metrics
	keys     *keyCache

	onRefused func(Refusal)
}

var _ workload.SpiffeWorkloadAPIServer = (*Handler)(nil)

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Manager == nil:
		return nil, errors.New("workloadapi: Config.Manager is required")
	case cfg.Attestor == nil:
		return nil, errors.New("workloadapi: Config.Attestor is required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Handler{
		manager:  cfg.Manager,
		attestor: cfg.Attestor,
		log:      log.With(telemetry.Component, "workloadapi"),
		metrics:  newMetrics(cfg.Metrics),
		keys:     newKeyCache(),

		onRefused: cfg.OnRefused,
	}, nil
}

// Register adds the SPIFFE Workload API service to r. The server must use
// peercred.TransportCredentials on a peercred listener and the interceptors
// from SecurityHeaderInterceptors.
func (h *Handler) Register(r grpc.ServiceRegistrar) {
	workload.RegisterSpiffeWorkloadAPIServer(r, h)
}
