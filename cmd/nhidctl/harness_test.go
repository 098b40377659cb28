package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var td = spiffeid.RequireTrustDomainFromString("example.org")

// countingStore is the real bolt store, counting batch calls so tests can
// see how "entry create -f" chunks a file.
type countingStore struct {
	*bolt.Store
	batches atomic.Int32
}

func (c *countingStore) CreateEntries(ctx context.Context, es []*typesv1.Entry) ([]*typesv1.Entry, []error, error) {
	c.batches.Add(1)
	return c.Store.CreateEntries(ctx, es)
}

// server is a real admin API on a real Unix socket over a real bolt store.
type server struct {
	socket string
	store  *countingStore
	health *health.Server
}

// shortTempDir is a temp dir short enough for a Unix socket path.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nhidctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func newServer(t *testing.T) *server {
	t.Helper()
	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return serveAdmin(t, dir, st, adminapi.Config{})
}

// serveAdmin serves the admin API over a peer-checked socket in dir, on
// st (counted) and cfg's other parts, as nhid-server does, with health.
func serveAdmin(t *testing.T, dir string, st *bolt.Store, cfg adminapi.Config) *server {
	t.Helper()
	s := &server{socket: filepath.Join(dir, "server.sock"), store: &countingStore{Store: st}, health: health.NewServer()}
	cfg.TrustDomain, cfg.Store = td, s.store
	svc, err := adminapi.New(cfg)
	if err != nil {
		t.Fatalf("adminapi.New: %v", err)
	}
	lis, err := peercred.Listen(s.socket)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	unary, stream := adminapi.AuthorizePeer(nil, nil)
	srv := grpc.NewServer(grpc.Creds(peercred.TransportCredentials()),
		grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	svc.Register(srv)
	healthpb.RegisterHealthServer(srv, s.health)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return s
}

// result is what one nhidctl run printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

// run executes nhidctl in-process against the server's socket.
func (s *server) run(t *testing.T, args ...string) result {
	t.Helper()
	return runCLI(t, nil, append([]string{"--socket", s.socket}, args...)...)
}

// mustRun is run that fails the test on a non-zero exit.
func (s *server) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := s.run(t, args...)
	if r.code != 0 {
		t.Fatalf("nhidctl %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

func runCLI(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	root := newRootCmd(&stdout, &stderr)
	if stdin != nil {
		root.SetIn(bytes.NewReader(stdin))
	}
	code := executeCmd(ctx, root, args, &stderr)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}
