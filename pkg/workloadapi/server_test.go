package workloadapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// waitTimeout bounds every wait for an event in these tests. It is an
// upper bound for a stuck test, never a performance assertion.
const waitTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv(connectHelperEnv) != "" {
		runConnectHelper()
		return
	}
	goleak.VerifyTestMain(m)
}

// testServer is a Workload Endpoint as the agent serves it: gRPC on a
// peercred Unix listener, the security header interceptors and a Handler.
type testServer struct {
	path     string
	handler  *Handler
	registry *prometheus.Registry
	// accepted receives a value each time the listener hands a connection
	// to gRPC, whose peer is by then identified and pinned.
	accepted chan struct{}
}

type serverOptions struct {
	manager  Manager
	attestor Attestor
}

func startServer(t testing.TB, opts serverOptions) *testServer {
	t.Helper()
	path := socketPath(t)
	lis, err := peercred.ListenConfig{Log: discardLog()}.Listen(path)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	reg := prometheus.NewRegistry()
	h, err := New(Config{Manager: opts.manager, Attestor: opts.attestor, Log: discardLog(), Metrics: reg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	unary, stream := SecurityHeaderInterceptors()
	srv := grpc.NewServer(append(ServerOptions(),
		grpc.Creds(peercred.TransportCredentials()),
		grpc.UnaryInterceptor(unary),
		grpc.StreamInterceptor(stream),
	)...)
	h.Register(srv)
	ts := &testServer{path: path, handler: h, registry: reg, accepted: make(chan struct{}, 4096)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(&notifyListener{Listener: lis, accepted: ts.accepted})
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return ts
}

// socketPath returns a socket path in t.TempDir(), or in a shorter temporary
// directory when a long test name would push it past sun_path's 107 bytes.
func socketPath(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 80 {
		short, err := os.MkdirTemp("", "nhidwl")
		if err != nil {
			t.Fatalf("temp dir: %v", err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(short) })
		dir = short
	}
	return filepath.Join(dir, "agent.sock")
}

// notifyListener reports accepted connections. It returns them unwrapped,
// so peercred.ProcessOf still finds their peer.
type notifyListener struct {
	net.Listener
	accepted chan struct{}
}

func (l *notifyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.accepted <- struct{}{}:
		default:
		}
	}
	return c, err
}

func discardLog() *slog.Logger { return telemetry.DiscardLogger() }

func (ts *testServer) addr() string { return "unix://" + ts.path }

// client returns a go-spiffe Workload API client for the server.
func (ts *testServer) client(t testing.TB) *spiffewl.Client {
	t.Helper()
	c, err := spiffewl.New(context.Background(), spiffewl.WithAddr(ts.addr()))
	if err != nil {
		t.Fatalf("workloadapi.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawClient returns the generated client on its own connection, for calls
// go-spiffe would not make (no header, bad requests) and for reading the
// protocol messages themselves.
func (ts *testServer) rawClient(t testing.TB) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(ts.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

// withHeader adds the Workload Endpoint security header.
func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

// testContext is cancelled at the end of the test or after waitTimeout.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// streamContext is cancelled at the end of the test, with no deadline: it
// is for streams that span several waits, each bounded on its own.
func streamContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recvResult is one Recv of a stream, delivered on a channel so tests can
// wait for it with a timeout.
type recvResult[M any] struct {
	msg M
	err error
}

// receiveAll reads a stream into a channel until it fails.
func receiveAll[M any](stream interface{ Recv() (M, error) }) <-chan recvResult[M] {
	ch := make(chan recvResult[M], 16)
	go func() {
		defer close(ch)
		for {
			msg, err := stream.Recv()
			ch <- recvResult[M]{msg, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// next returns the stream's next result, failing the test if none comes
// within waitTimeout. Call it from the test goroutine only.
func next[M any](t testing.TB, ch <-chan recvResult[M]) (M, error) {
	t.Helper()
	msg, err, ok := nextWithin(ch)
	if !ok {
		t.Fatalf("no stream message within %v", waitTimeout)
	}
	return msg, err
}

// nextWithin is next for any goroutine: ok is false after waitTimeout.
func nextWithin[M any](ch <-chan recvResult[M]) (msg M, err error, ok bool) {
	select {
	case r, open := <-ch:
		if !open {
			return msg, errors.New("stream reader finished"), true
		}
		return r.msg, r.err, true
	case <-time.After(waitTimeout):
		return msg, nil, false
	}
}
