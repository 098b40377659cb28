package grants

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/workloadapi"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// waitTimeout bounds every wait for an event; never a performance bound.
const waitTimeout = 10 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// attestorFunc attests callers with a function.
type attestorFunc func(ctx context.Context, pid int32) (selector.Set, error)

func (f attestorFunc) Attest(ctx context.Context, pid int32) (selector.Set, error) {
	return f(ctx, pid)
}

// staticIdentities gives every caller the same identities.
type staticIdentities struct {
	mu  sync.Mutex
	ids []workloadapi.Identity
}

func (s *staticIdentities) Current(selector.Set) *workloadapi.Update {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &workloadapi.Update{Identities: append([]workloadapi.Identity(nil), s.ids...)}
}

// set replaces the identities.
func (s *staticIdentities) set(ids ...workloadapi.Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = ids
}

func identity(entryID, spiffeID string) workloadapi.Identity {
	return workloadapi.Identity{Entry: &typesv1.Entry{Id: entryID, SpiffeId: spiffeID, Purpose: "deploys", Owner: "ana@example.org"}}
}

// upstream stands in for nhid-server's AgentGrantService on a real gRPC
// server. It records what it receives and answers with the test's script.
type upstream struct {
	agentv1.UnimplementedAgentGrantServiceServer

	mu       sync.Mutex
	requests []*agentv1.AgentGrantRequest
	releases []*agentv1.AgentReleaseGrantRequest
	lists    []*agentv1.AgentListGrantsRequest
	waits    []*agentv1.AgentWaitGrantRequest

	request func(*agentv1.AgentGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error
	wait    func(*agentv1.AgentWaitGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error
	release func(*agentv1.AgentReleaseGrantRequest) error
	list    func(*agentv1.AgentListGrantsRequest) (*agentv1.AgentListGrantsResponse, error)
}

func (u *upstream) RequestGrant(req *agentv1.AgentGrantRequest, stream grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
	u.mu.Lock()
	u.requests = append(u.requests, proto.Clone(req).(*agentv1.AgentGrantRequest))
	fn := u.request
	u.mu.Unlock()
	return fn(req, stream)
}

func (u *upstream) WaitGrant(req *agentv1.AgentWaitGrantRequest, stream grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
	u.mu.Lock()
	u.waits = append(u.waits, proto.Clone(req).(*agentv1.AgentWaitGrantRequest))
	fn := u.wait
	u.mu.Unlock()
	return fn(req, stream)
}

// onWait sets the upstream's answer to WaitGrant.
func (u *upstream) onWait(fn func(*agentv1.AgentWaitGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.wait = fn
}

func (u *upstream) gotWaits() []*agentv1.AgentWaitGrantRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*agentv1.AgentWaitGrantRequest(nil), u.waits...)
}

func (u *upstream) ReleaseGrant(_ context.Context, req *agentv1.AgentReleaseGrantRequest) (*agentv1.AgentReleaseGrantResponse, error) {
	u.mu.Lock()
	u.releases = append(u.releases, proto.Clone(req).(*agentv1.AgentReleaseGrantRequest))
	fn := u.release
	u.mu.Unlock()
	if err := fn(req); err != nil {
		return nil, err
	}
	return &agentv1.AgentReleaseGrantResponse{}, nil
}

func (u *upstream) ListGrants(_ context.Context, req *agentv1.AgentListGrantsRequest) (*agentv1.AgentListGrantsResponse, error) {
	u.mu.Lock()
	u.lists = append(u.lists, proto.Clone(req).(*agentv1.AgentListGrantsRequest))
	fn := u.list
	u.mu.Unlock()
	return fn(req)
}

// onRequest, onRelease and onList set the upstream's answers.
func (u *upstream) onRequest(fn func(*agentv1.AgentGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.request = fn
}

func (u *upstream) onRelease(fn func(*agentv1.AgentReleaseGrantRequest) error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.release = fn
}

func (u *upstream) onList(fn func(*agentv1.AgentListGrantsRequest) (*agentv1.AgentListGrantsResponse, error)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.list = fn
}

func (u *upstream) requestCount() int { return len(u.gotRequests()) }

// gotRequests, gotReleases and gotLists copy what the upstream received.
func (u *upstream) gotRequests() []*agentv1.AgentGrantRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*agentv1.AgentGrantRequest(nil), u.requests...)
}

func (u *upstream) gotReleases() []*agentv1.AgentReleaseGrantRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*agentv1.AgentReleaseGrantRequest(nil), u.releases...)
}

func (u *upstream) gotLists() []*agentv1.AgentListGrantsRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*agentv1.AgentListGrantsRequest(nil), u.lists...)
}

// harness is the Grant API served as the agent serves it, forwarding to
// an upstream over a real gRPC connection.
type harness struct {
	handler    *Handler
	up         *upstream
	identities *staticIdentities
	client     grantv1.GrantsClient
	registry   *prometheus.Registry
	stopUp     func()
	upPath     string
}

type harnessOptions struct {
	attestor workloadapi.Attestor
}

func newHarness(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	dir, err := os.MkdirTemp("", "grants-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &harness{up: &upstream{}, identities: &staticIdentities{ids: []workloadapi.Identity{identity("e1", "spiffe://example.org/deployer")}}, registry: prometheus.NewRegistry()}
	upConn := h.startUpstream(t, filepath.Join(dir, "server.sock"))

	attestor := opts.attestor
	if attestor == nil {
		attestor = attestorFunc(func(context.Context, int32) (selector.Set, error) {
			return selector.NewSet(selector.Must("unix:uid:1000")), nil
		})
	}
	h.handler, err = New(Config{Attestor: attestor, Identities: h.identities,
		Server: agentv1.NewAgentGrantServiceClient(upConn), Metrics: h.registry})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.sock")
	lis, err := peercred.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	secUnary, secStream := workloadapi.SecurityHeaderInterceptors()
	srv := grpc.NewServer(grpc.Creds(peercred.TransportCredentials()),
		grpc.UnaryInterceptor(secUnary), grpc.StreamInterceptor(secStream))
	h.handler.Register(srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() { h.handler.Stop(); srv.Stop(); <-served })

	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	h.client = grantv1.NewGrantsClient(conn)
	return h
}

// startUpstream serves h.up on path and returns a client connection to it.
func (h *harness) startUpstream(t testing.TB, path string) *grpc.ClientConn {
	t.Helper()
	h.up.request = func(*agentv1.AgentGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		return errors.New("no script")
	}
	h.up.wait = func(*agentv1.AgentWaitGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		return errors.New("no script")
	}
	h.up.release = func(*agentv1.AgentReleaseGrantRequest) error { return nil }
	h.up.list = func(*agentv1.AgentListGrantsRequest) (*agentv1.AgentListGrantsResponse, error) {
		return &agentv1.AgentListGrantsResponse{}, nil
	}
	h.upPath = path
	h.serveUpstream(t)
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// serveUpstream serves h.up on h.upPath until h.stopUp, as a server
// process would until it stops; it may be called again after stopUp, as
// a restarted server.
func (h *harness) serveUpstream(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("unix", h.upPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	agentv1.RegisterAgentGrantServiceServer(srv, h.up)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	var once sync.Once
	stop := func() { once.Do(func() { srv.Stop(); <-served }) }
	h.stopUp = stop
	t.Cleanup(stop)
}

// workloadCtx carries the Workload Endpoint's security header.
func workloadCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

// validRequest is a request ValidateRequest accepts.
func validRequest() *grantv1.GrantRequest {
	return &grantv1.GrantRequest{Scopes: []string{"deploy:staging"}, Resource: "app/web", Action: "deploy", Reason: "ship release 1.2", Ttl: 300}
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// collect reads a Request stream to its end.
func collect(stream grpc.ServerStreamingClient[grantv1.GrantStatus]) ([]*grantv1.GrantStatus, error) {
	var out []*grantv1.GrantStatus
	for {
		msg, err := stream.Recv()
		if err != nil {
			return out, err
		}
		out = append(out, msg)
	}
}
