package adminapi

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelperClient())
	}
	goleak.VerifyTestMain(m)
}

var (
	td      = spiffeid.RequireTrustDomainFromString("example.org")
	testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

const (
	agentA = "spiffe://example.org/nhid/agent/join_token/aaaa"
	agentB = "spiffe://example.org/nhid/agent/join_token/bbbb"
)

// countingStore is the real bolt store, counting batch writes so tests can
// check a batch is one store call.
type countingStore struct {
	*bolt.Store
	creates atomic.Int32
}

func (c *countingStore) CreateEntries(ctx context.Context, es []*typesv1.Entry) ([]*typesv1.Entry, []error, error) {
	c.creates.Add(1)
	return c.Store.CreateEntries(ctx, es)
}

// syncBuffer collects log output written from server goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type harness struct {
	store   *countingStore
	svc     *Service
	clock   *clock.Fake
	logs    *syncBuffer
	socket  string
	entries adminv1.EntryServiceClient
	nodes   adminv1.NodeServiceClient
	tokens  adminv1.JoinTokenServiceClient
	bundle  adminv1.BundleServiceClient
}

// harnessOptions chooses the access check; the default is what
// AuthorizePeer(nil, nil) returns.
type harnessOptions struct {
	unary  grpc.UnaryServerInterceptor
	stream grpc.StreamServerInterceptor
}

func withAuth(a *authorizer) harnessOptions {
	return harnessOptions{unary: a.unary, stream: a.stream}
}

// shortTempDir is a temp dir short enough for a Unix socket path, which
// t.TempDir (named after the test) may not be.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nhid-admin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// newHarness serves the admin API on a real Unix socket over a real bolt
// store, and returns clients connected to it.
func newHarness(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	h := &harness{store: &countingStore{Store: st}, clock: clock.NewFake(testNow), logs: &syncBuffer{}}
	h.svc, err = New(Config{
		TrustDomain: td,
		Store:       h.store,
		Log:         slog.New(slog.NewJSONHandler(h.logs, nil)),
		Clock:       h.clock,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.socket = filepath.Join(dir, "admin.sock")
	lis, err := peercred.Listen(h.socket)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	if opts.unary == nil {
		opts.unary, opts.stream = AuthorizePeer(nil, nil)
	}
	srv := grpc.NewServer(grpc.Creds(peercred.TransportCredentials()),
		grpc.UnaryInterceptor(opts.unary), grpc.StreamInterceptor(opts.stream))
	h.svc.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn := dial(t, h.socket)
	h.entries = adminv1.NewEntryServiceClient(conn)
	h.nodes = adminv1.NewNodeServiceClient(conn)
	h.tokens = adminv1.NewJoinTokenServiceClient(conn)
	h.bundle = adminv1.NewBundleServiceClient(conn)
	return h
}

func dial(t testing.TB, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", socket, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// snapshot is the store state a refused request must leave untouched.
type snapshot struct {
	revision int64
	entries  []*typesv1.Entry
}

func (h *harness) snapshot(t *testing.T) snapshot {
	t.Helper()
	ctx := testCtx(t)
	rev, err := h.store.Revision(ctx)
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	entries, _, err := h.store.ListEntries(ctx, store.ListEntriesRequest{})
	if err != nil {
		t.Fatalf("ListEntries: %v", err)
	}
	return snapshot{revision: rev, entries: entries}
}

func (h *harness) requireUnchanged(t *testing.T, before snapshot) {
	t.Helper()
	after := h.snapshot(t)
	if after.revision != before.revision {
		t.Errorf("store revision moved from %d to %d", before.revision, after.revision)
	}
	if diff := cmp.Diff(before.entries, after.entries, protocmp.Transform()); diff != "" {
		t.Errorf("stored entries changed (-before +after):\n%s", diff)
	}
}

// requireCode checks err is a status with code and, if non-empty, a
// message containing every part of wantMsg.
func requireCode(t *testing.T, err error, code codes.Code, wantMsg ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code {
		t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), code)
	}
	for _, m := range wantMsg {
		if !strings.Contains(st.Message(), m) {
			t.Errorf("message %q does not contain %q", st.Message(), m)
		}
	}
}

func workloadEntry(name string) *typesv1.Entry {
	return &typesv1.Entry{
		SpiffeId:  "spiffe://example.org/" + name,
		ParentId:  agentA,
		Selectors: []string{"unix:uid:1000", "unix:path:/usr/bin/" + name},
		Purpose:   "runs " + name,
		Owner:     "ops@example.org",
	}
}

func (h *harness) create(t *testing.T, e *typesv1.Entry) *typesv1.Entry {
	t.Helper()
	resp, err := h.entries.CreateEntry(testCtx(t), &adminv1.CreateEntryRequest{Entry: e})
	if err != nil {
		t.Fatalf("CreateEntry: %v", err)
	}
	return resp.GetEntry()
}

func uidOfTest() int { return os.Getuid() }
