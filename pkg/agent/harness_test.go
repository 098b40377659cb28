package agent_test

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nhid/nhid/attestors/all"
	"github.com/nhid/nhid/attestors/jointoken"
	"github.com/nhid/nhid/pkg/agent"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/server"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const waitTimeout = 10 * time.Second

// testServer is a real nhid-server run in-process.
type testServer struct {
	srv   *server.Server
	admin *grpc.ClientConn
	stop  func()
}

// startServer runs a server on 127.0.0.1:0 with its data in dataDir,
// accepting join tokens and the extra node attestors given.
func startServer(t testing.TB, dataDir string, extra ...attestor.NodeVerifier) *testServer {
	t.Helper()
	return runServer(t, serverConfig(t, dataDir, extra...))
}

// serverConfig is the config startServer runs a server with.
func serverConfig(t testing.TB, dataDir string, extra ...attestor.NodeVerifier) server.Config {
	t.Helper()
	return server.Config{
		TrustDomain: td,
		DataDir:     dataDir,
		BindAddress: "127.0.0.1:0",
		AdminSocket: filepath.Join(shortTempDir(t), "server.sock"),
		NodeVerifiers: func(d server.VerifierDeps) ([]attestor.NodeVerifier, error) {
			vs, err := all.NodeVerifiers(all.NodeVerifierConfig{TrustDomain: d.TrustDomain, Tokens: d.Store, Clock: d.Clock, Log: d.Log})
			return append(vs, extra...), err
		},
		Log: testLogger(t, "server"),
	}
}

// runServer runs a server with cfg until the test ends.
func runServer(t testing.TB, cfg server.Config) *testServer {
	t.Helper()
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("server Run: %v", err)
	case <-time.After(waitTimeout):
		cancel()
		t.Fatal("server not ready within 10s")
	}
	admin, err := grpc.NewClient("unix://"+srv.AdminSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, admin: admin}
	stopped := false
	ts.stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = admin.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server Run: %v", err)
			}
		case <-time.After(3 * waitTimeout):
			t.Error("server did not stop within 30s")
		}
	}
	t.Cleanup(ts.stop)
	return ts
}

// token generates a join token and returns it with the agent ID it gives.
func (s *testServer) token(t testing.TB) (token, agentID string) {
	t.Helper()
	resp, err := adminv1.NewJoinTokenServiceClient(s.admin).GenerateToken(context.Background(), &adminv1.GenerateTokenRequest{})
	if err != nil {
		t.Fatalf("GenerateToken: %v", err)
	}
	return resp.GetToken(), resp.GetSpiffeId()
}

// bundleFile writes the server's X.509 authorities to a PEM file.
func (s *testServer) bundleFile(t testing.TB) string {
	t.Helper()
	resp, err := adminv1.NewBundleServiceClient(s.admin).GetBundle(context.Background(), &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	var out []byte
	for _, a := range resp.GetBundle().GetX509Authorities() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.GetAsn1()})...)
	}
	path := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *testServer) entries() adminv1.EntryServiceClient {
	return adminv1.NewEntryServiceClient(s.admin)
}

// createEntry registers an entry for this test process (by uid) under parent.
func (s *testServer) createEntry(t testing.TB, parent, path string) *typesv1.Entry {
	t.Helper()
	resp, err := s.entries().CreateEntry(context.Background(), &adminv1.CreateEntryRequest{Entry: &typesv1.Entry{
		SpiffeId:  "spiffe://example.org/" + path,
		ParentId:  parent,
		Selectors: []string{fmt.Sprintf("unix:uid:%d", os.Getuid())},
		Purpose:   "integration test",
		Owner:     "tests@example.org",
	}})
	if err != nil {
		t.Fatalf("CreateEntry: %v", err)
	}
	return resp.GetEntry()
}

// testAgent is an agent run in-process.
type testAgent struct {
	*agent.Agent
	done   chan error
	cancel context.CancelFunc
}

// agentConfig is a test agent's config: join token evidence (if token is
// set), the real unix workload attestor, a short socket path.
func agentConfig(t testing.TB, srv *testServer, dataDir, token string) agent.Config {
	t.Helper()
	log := testLogger(t, "agent")
	workload, err := all.WorkloadAttestors(all.WorkloadConfig{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{
		TrustDomain:      td,
		DataDir:          dataDir,
		ServerAddress:    srv.srv.Addr().String(),
		WorkloadAttestor: all.Combine(log, workload...),
		SocketPath:       filepath.Join(shortTempDir(t), "agent.sock"),
		HealthAddress:    "127.0.0.1:0",
		Log:              log,
	}
	if token != "" {
		ev, err := jointoken.NewEvidence(token)
		if err != nil {
			t.Fatal(err)
		}
		cfg.NodeEvidence = ev
	}
	return cfg
}

// startAgent runs an agent and waits until it is ready.
func startAgent(t testing.TB, cfg agent.Config) *testAgent {
	t.Helper()
	ta := runAgent(t, cfg)
	select {
	case <-ta.Ready():
	case err := <-ta.done:
		t.Fatalf("agent Run: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("agent not ready within 10s")
	}
	return ta
}

// runAgent starts an agent without waiting for it.
func runAgent(t testing.TB, cfg agent.Config) *testAgent {
	t.Helper()
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{Agent: a, done: make(chan error, 1), cancel: cancel}
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		if err := ta.stop(); err != nil && !errors.Is(err, errAlreadyStopped) {
			t.Errorf("agent Run: %v", err)
		}
	})
	return ta
}

var errAlreadyStopped = errors.New("already stopped")

// stop ends the agent and returns Run's error.
func (ta *testAgent) stop() error {
	ta.cancel()
	select {
	case err, ok := <-ta.done:
		if !ok {
			return errAlreadyStopped
		}
		close(ta.done)
		return err
	case <-time.After(3 * waitTimeout):
		return errors.New("agent did not stop within 30s")
	}
}

// exitErr waits for Run to return by itself.
func (ta *testAgent) exitErr(t testing.TB) error {
	t.Helper()
	select {
	case err := <-ta.done:
		close(ta.done)
		return err
	case <-time.After(3 * waitTimeout):
		t.Fatal("agent did not stop within 30s")
	}
	return nil
}

// shortTempDir is a temporary directory with a short path: Unix socket
// paths are limited to 107 bytes.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nhid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// testLogger logs to the test's output when -v is given.
func testLogger(t testing.TB, component string) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name(), "c", component)
}
