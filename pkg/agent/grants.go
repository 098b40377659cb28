package agent

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"

	"github.com/nhid/nhid/pkg/agent/grants"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// newGrantsHandler builds the Grant API served next to the Workload API:
// the same attestor and identities, forwarding over the server connection.
func (a *Agent) newGrantsHandler() (*grants.Handler, error) {
	h, err := grants.New(grants.Config{
		Attestor:   a.cfg.WorkloadAttestor,
		Identities: a.manager,
		Server:     a.conn,
		Log:        a.log,
		Metrics:    a.reg,
		Clock:      a.clock,
	})
	if err != nil {
		return nil, fmt.Errorf("grant API: %w", err)
	}
	return h, nil
}

// grantStreams counts the grant requests in flight on each connection, so
// that a connection replaced by a renewal stays open for the requests
// still waiting on it (a human's approval may take minutes) and closes
// after the last one. New requests always use the current connection.
type grantStreams struct {
	mu      sync.Mutex
	active  map[*grpc.ClientConn]int
	retired map[*grpc.ClientConn]bool
}

func (g *grantStreams) open(conn *grpc.ClientConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.active == nil {
		g.active = make(map[*grpc.ClientConn]int)
	}
	g.active[conn]++
}

// done ends one request on conn, closing conn if it was retired and this
// was its last request.
func (g *grantStreams) done(conn *grpc.ClientConn) {
	g.mu.Lock()
	g.active[conn]--
	closeNow := g.active[conn] == 0 && g.retired[conn]
	if g.active[conn] == 0 {
		delete(g.active, conn)
		delete(g.retired, conn)
	}
	g.mu.Unlock()
	if closeNow {
		_ = conn.Close()
	}
}

// retire closes conn now, or after its last grant request.
func (g *grantStreams) retire(conn *grpc.ClientConn) {
	g.mu.Lock()
	if g.active[conn] > 0 {
		if g.retired == nil {
			g.retired = make(map[*grpc.ClientConn]bool)
		}
		g.retired[conn] = true
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	_ = conn.Close()
}

// retire closes a replaced connection once no grant request uses it.
func (s *serverConn) retire(old *grpc.ClientConn) {
	if old != nil {
		s.grants.retire(old)
	}
}

// grantClient returns the grant service on the current connection and
// the connection, or nils while the agent is not connected. With track,
// the connection counts one more request in flight.
func (s *serverConn) grantClient(track bool) (agentv1.AgentGrantServiceClient, *grpc.ClientConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil, nil
	}
	if track {
		s.grants.open(s.conn)
	}
	return agentv1.NewAgentGrantServiceClient(s.conn), s.conn
}

// RequestGrant implements grants.Server. The request keeps its connection
// open until it ends, even if a renewal replaces the connection meanwhile.
func (s *serverConn) RequestGrant(ctx context.Context, in *agentv1.AgentGrantRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[grantv1.GrantStatus], error) {
	return s.trackedStream(ctx, func(ctx context.Context, c agentv1.AgentGrantServiceClient) (grpc.ServerStreamingClient[grantv1.GrantStatus], error) {
		return c.RequestGrant(ctx, in, opts...)
	})
}

// WaitGrant implements grants.Server: a wait resumed after a RequestGrant
// stream broke, kept open across renewals as RequestGrant is. After a
// server failover it goes to whichever server the connection reaches.
func (s *serverConn) WaitGrant(ctx context.Context, in *agentv1.AgentWaitGrantRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[grantv1.GrantStatus], error) {
	return s.trackedStream(ctx, func(ctx context.Context, c agentv1.AgentGrantServiceClient) (grpc.ServerStreamingClient[grantv1.GrantStatus], error) {
		return c.WaitGrant(ctx, in, opts...)
	})
}

// trackedStream opens a grant status stream on the current connection,
// counting it as a request in flight on that connection until it ends.
func (s *serverConn) trackedStream(ctx context.Context, open func(context.Context, agentv1.AgentGrantServiceClient) (grpc.ServerStreamingClient[grantv1.GrantStatus], error)) (grpc.ServerStreamingClient[grantv1.GrantStatus], error) {
	c, conn := s.grantClient(true)
	if c == nil {
		return nil, errNotConnected
	}
	var once sync.Once
	done := func() { once.Do(func() { s.grants.done(conn) }) }
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(ctx, done)
	st, err := open(ctx, c)
	if err != nil {
		stop()
		cancel()
		done()
		return nil, err
	}
	return &trackedGrantStream{ServerStreamingClient: st, end: func() { stop(); cancel(); done() }}, nil
}

// trackedGrantStream ends its request's count when the stream ends.
type trackedGrantStream struct {
	grpc.ServerStreamingClient[grantv1.GrantStatus]
	end func()
}

func (t *trackedGrantStream) Recv() (*grantv1.GrantStatus, error) {
	msg, err := t.ServerStreamingClient.Recv()
	if err != nil {
		t.end()
	}
	return msg, err
}

// ReleaseGrant implements grants.Server.
func (s *serverConn) ReleaseGrant(ctx context.Context, in *agentv1.AgentReleaseGrantRequest, opts ...grpc.CallOption) (*agentv1.AgentReleaseGrantResponse, error) {
	c, _ := s.grantClient(false)
	if c == nil {
		return nil, errNotConnected
	}
	return c.ReleaseGrant(ctx, in, opts...)
}

// ListGrants implements grants.Server.
func (s *serverConn) ListGrants(ctx context.Context, in *agentv1.AgentListGrantsRequest, opts ...grpc.CallOption) (*agentv1.AgentListGrantsResponse, error) {
	c, _ := s.grantClient(false)
	if c == nil {
		return nil, errNotConnected
	}
	return c.ListGrants(ctx, in, opts...)
}
