package agent_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/nhid/nhid/pkg/server"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

// startHAServers runs n servers sharing one etcd store.
func startHAServers(t *testing.T, n int) []*testServer {
	t.Helper()
	m := etcdtest.Start(t, etcdtest.Options{})
	out := make([]*testServer, n)
	for i := range out {
		cfg := serverConfig(t, t.TempDir())
		cfg.HealthAddress = "127.0.0.1:0"
		cfg.Store = server.StoreConfig{Kind: server.StoreEtcd, Etcd: etcd.Config{Endpoints: []string{m.ClientURL}, Prefix: "/failover/"}}
		out[i] = runServer(t, cfg)
	}
	return out
}

// syncStreams reads how many Sync streams a server serves.
func syncStreams(t *testing.T, s *testServer) int {
	t.Helper()
	resp, err := http.Get("http://" + s.srv.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		var n int
		if _, err := fmt.Sscanf(line, "nhid_agentapi_sync_streams %d", &n); err == nil {
			return n
		}
	}
	return 0
}

// sharedBundleFile writes the bundle once it holds every server's CA.
func sharedBundleFile(t *testing.T, s *testServer, cas int) string {
	t.Helper()
	var resp *adminv1.GetBundleResponse
	waitFor(t, "every server's CA in the bundle", func() bool {
		var err error
		resp, err = adminv1.NewBundleServiceClient(s.admin).GetBundle(context.Background(), &adminv1.GetBundleRequest{})
		return err == nil && len(resp.GetBundle().GetX509Authorities()) == cas
	})
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

// erringWatcher records Workload API stream errors besides the contexts.
type erringWatcher struct {
	ch   chan *workloadapi.X509Context
	mu   sync.Mutex
	errs []error
}

func (w *erringWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.ch <- c }
func (w *erringWatcher) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

func TestAgent_FailsOverToAnotherServerWithoutDroppingWorkloadStreams(t *testing.T) {
	servers := startHAServers(t, 2)
	token, agentID := servers[0].token(t)
	first := servers[0].createEntry(t, agentID, "workload/a")
	cfg := agentConfig(t, servers[0], t.TempDir(), token)
	cfg.ServerAddress = servers[0].srv.Addr().String() + "," + servers[1].srv.Addr().String()
	cfg.TrustBundleFile = sharedBundleFile(t, servers[0], 2)
	a := startAgent(t, cfg)

	ctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(ctx, socketAddr(a.Agent))
	if err != nil {
		t.Fatal(err)
	}
	w := &erringWatcher{ch: make(chan *workloadapi.X509Context, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = client.WatchX509Context(ctx, w)
	}()
	t.Cleanup(func() { cancel(); <-done; client.Close() })
	waitContext(t, w.ch, first.GetSpiffeId())

	// Stop the server the agent syncs with; the other must take over.
	used := -1
	waitFor(t, "the agent's sync stream", func() bool {
		for i, s := range servers {
			if syncStreams(t, s) == 1 {
				used = i
				return true
			}
		}
		return false
	})
	servers[used].stop()
	other := servers[1-used]
	second := other.createEntry(t, agentID, "workload/b")
	waitContext(t, w.ch, first.GetSpiffeId(), second.GetSpiffeId())
	waitFor(t, "the agent syncing with the other server", func() bool { return syncStreams(t, other) == 1 })

	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) != 0 {
		t.Errorf("the workload's stream broke during the failover: %v", w.errs)
	}
}
