// Package grants serves nhid's Grant API (nhid.grant.v1.Grants) on the
// agent's Workload API socket: a workload asks for a just-in-time grant
// for one task, and the agent forwards the request, on behalf of the
// workload's registration entry, to nhid-server over the agent's mTLS
// connection (nhid.agent.v1.AgentGrantService), relaying the server's
// answers (PENDING_APPROVAL, then GRANTED with a Txn-Token, or DENIED) as
// they come. When the stream to the server breaks while a grant waits for
// approval (a server restart, a failover), the workload's stream stays
// open and the agent resumes the wait (WaitGrant), with backoff, until
// the decision arrives or the workload gives up.
//
// The caller is identified exactly as on the Workload API: kernel peer
// credentials, the workload attestors, the agent's cache. Requests are
// validated here, so malformed input never leaves the node, and errors
// become gRPC status codes here and only here. Tokens are never logged.
package grants

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/nhid/nhid/pkg/workloadapi"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// Identities is the agent's view of the identities a set of workload
// selectors is entitled to (the agent's SVID manager).
type Identities interface {
	Current(sels selector.Set) *workloadapi.Update
}

// Server is the agent's connection to nhid-server's grant service. Calls
// made while the agent is not connected fail with Unavailable.
type Server interface {
	RequestGrant(ctx context.Context, in *agentv1.AgentGrantRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[grantv1.GrantStatus], error)
	WaitGrant(ctx context.Context, in *agentv1.AgentWaitGrantRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[grantv1.GrantStatus], error)
	ReleaseGrant(ctx context.Context, in *agentv1.AgentReleaseGrantRequest, opts ...grpc.CallOption) (*agentv1.AgentReleaseGrantResponse, error)
	ListGrants(ctx context.Context, in *agentv1.AgentListGrantsRequest, opts ...grpc.CallOption) (*agentv1.AgentListGrantsResponse, error)
}

// Config configures a Handler.
type Config struct {
	// Attestor finds a calling process's selectors. Required.
	Attestor workloadapi.Attestor
	// Identities gives the identities the caller's selectors hold. Required.
	Identities Identities
	// Server forwards requests to nhid-server. Required.
	Server Server
	// Log receives one line per request. Defaults to discarding.
	Log *slog.Logger
	// Metrics, if set, receives the nhid_agent_grant_* metrics.
	Metrics prometheus.Registerer
	// Clock decides which listed grants have expired. Defaults to the
	// real clock.
	Clock clock.Clock
}

// Handler implements grantv1.GrantsServer.
type Handler struct {
	grantv1.UnimplementedGrantsServer

	attestor   workloadapi.Attestor
	identities Identities
	server     Server
	log        *slog.Logger
	metrics    *metrics
	clock      clock.Clock

	// stopping ends every call in flight when the agent stops, so that a
	// request waiting for a human does not hold the shutdown up.
	stopping context.Context
	stop     context.CancelFunc
}

var _ grantv1.GrantsServer = (*Handler)(nil)

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Attestor == nil:
		return nil, errors.New("grants: Config.Attestor is required")
	case cfg.Identities == nil:
		return nil, errors.New("grants: Config.Identities is required")
	case cfg.Server == nil:
		return nil, errors.New("grants: Config.Server is required")
	}
	stopping, stop := context.WithCancel(context.Background())
	return &Handler{
		attestor:   cfg.Attestor,
		identities: cfg.Identities,
		server:     cfg.Server,
		log:        telemetry.OrDiscard(cfg.Log).With(telemetry.Component, "grants"),
		metrics:    newMetrics(cfg.Metrics),
		clock:      clock.OrReal(cfg.Clock),
		stopping:   stopping,
		stop:       stop,
	}, nil
}

// Register adds the Grant API to r. The server must be the Workload API's:
// peercred.TransportCredentials on a peercred listener, and the
// interceptors from workloadapi.SecurityHeaderInterceptors.
func (h *Handler) Register(r grpc.ServiceRegistrar) {
	grantv1.RegisterGrantsServer(r, h)
}

// Stop ends the calls in flight with Unavailable and refuses new ones the
// same way. The agent calls it before stopping the Workload API server.
func (h *Handler) Stop() { h.stop() }
