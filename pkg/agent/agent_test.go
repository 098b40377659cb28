package agent_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/agent"
	"github.com/nhid/nhid/pkg/store/agentcache"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func socketAddr(a *agent.Agent) workloadapi.ClientOption {
	return workloadapi.WithAddr("unix://" + a.SocketPath())
}

func fetchX509(t *testing.T, a *agent.Agent) *x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, socketAddr(a))
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	return svid
}

func TestAgent_AttestsSyncsAndServesAWorkload(t *testing.T) {
	srv := startServer(t, t.TempDir())
	token, agentID := srv.token(t)
	e := srv.createEntry(t, agentID, "workload/api")
	dataDir := t.TempDir()
	cfg := agentConfig(t, srv, dataDir, token)
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)

	svid := fetchX509(t, a.Agent)
	if svid.ID.String() != e.GetSpiffeId() {
		t.Errorf("X.509-SVID ID = %s, want %s", svid.ID, e.GetSpiffeId())
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	client, err := workloadapi.New(ctx, socketAddr(a.Agent))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	jwt, err := client.FetchJWTSVID(ctx, jwtParams("https://api.example.org"))
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	got, err := client.ValidateJWTSVID(ctx, jwt.Marshal(), "https://api.example.org")
	if err != nil {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}
	if got.ID.String() != e.GetSpiffeId() {
		t.Errorf("JWT-SVID subject = %s, want %s", got.ID, e.GetSpiffeId())
	}

	for _, name := range []string{"agent_svid.pem", "cache.db"} {
		fi, err := os.Stat(filepath.Join(dataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", name, fi.Mode().Perm())
		}
	}
	checkHealth(t, a.Agent)
}

func checkHealth(t *testing.T, a *agent.Agent) {
	t.Helper()
	base := "http://" + a.HealthAddr().String()
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": "nhid_agent_x509_svids_minted_total",
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %q, want 200 with %q", path, resp.StatusCode, body, want)
		}
	}
}

// watch follows the X.509 context on the agent socket.
func watch(t *testing.T, a *agent.Agent) <-chan *workloadapi.X509Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(ctx, socketAddr(a))
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *workloadapi.X509Context, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = client.WatchX509Context(ctx, &watcher{ch: ch})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		client.Close()
	})
	return ch
}

type watcher struct{ ch chan *workloadapi.X509Context }

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.ch <- c }
func (w *watcher) OnX509ContextWatchError(error)                  {}

// waitContext waits for an X.509 context whose SVID IDs are want.
func waitContext(t *testing.T, ch <-chan *workloadapi.X509Context, want ...string) *workloadapi.X509Context {
	t.Helper()
	deadline := time.After(waitTimeout)
	var last []string
	for {
		select {
		case c := <-ch:
			last = nil
			for _, s := range c.SVIDs {
				last = append(last, s.ID.String())
			}
			if cmp.Equal(want, last) {
				return c
			}
		case <-deadline:
			t.Fatalf("no X.509 context with %v within 10s; last had %v", want, last)
		}
	}
}

func TestAgent_EntryChangesReachAnOpenStream(t *testing.T) {
	srv := startServer(t, t.TempDir())
	token, agentID := srv.token(t)
	first := srv.createEntry(t, agentID, "workload/a")
	cfg := agentConfig(t, srv, t.TempDir(), token)
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)
	ch := watch(t, a.Agent)
	waitContext(t, ch, first.GetSpiffeId())

	second := srv.createEntry(t, agentID, "workload/b")
	waitContext(t, ch, first.GetSpiffeId(), second.GetSpiffeId())

	renamed := proto.Clone(second).(*typesv1.Entry)
	renamed.SpiffeId = "spiffe://example.org/workload/c"
	if _, err := srv.entries().UpdateEntry(context.Background(), &adminv1.UpdateEntryRequest{Entry: renamed}); err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	waitContext(t, ch, first.GetSpiffeId(), renamed.GetSpiffeId())

	if _, err := srv.entries().DeleteEntry(context.Background(), &adminv1.DeleteEntryRequest{Id: first.GetId()}); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	waitContext(t, ch, renamed.GetSpiffeId())
}

func TestAgent_RestartedWithTheServerDownServesTheCachedSVID(t *testing.T) {
	srv := startServer(t, t.TempDir())
	token, agentID := srv.token(t)
	srv.createEntry(t, agentID, "workload/cached")
	dataDir := t.TempDir()
	cfg := agentConfig(t, srv, dataDir, token)
	cfg.InsecureBootstrap = true
	a := startAgent(t, cfg)
	before := fetchX509(t, a.Agent)
	if err := a.stop(); err != nil {
		t.Fatalf("agent Run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "bundle.pem")); err != nil {
		t.Errorf("the bundle from the insecure bootstrap was not persisted: %v", err)
	}
	srv.stop()

	cfg2 := agentConfig(t, srv, dataDir, "")
	cfg2.ServerAddress = cfg.ServerAddress
	a2 := startAgent(t, cfg2)
	after := fetchX509(t, a2.Agent)
	if after.ID != before.ID || !after.Certificates[0].Equal(before.Certificates[0]) {
		t.Errorf("restarted agent served %s (serial %s), want the cached %s (serial %s)",
			after.ID, after.Certificates[0].SerialNumber, before.ID, before.Certificates[0].SerialNumber)
	}
	if err := a2.stop(); err != nil {
		t.Fatal(err)
	}

	// Without its SVID the agent is another node until it attests: what
	// it cached is not served.
	if err := os.Remove(filepath.Join(dataDir, "agent_svid.pem")); err != nil {
		t.Fatal(err)
	}
	cfg3 := agentConfig(t, srv, dataDir, "0123456789abcdef01234567.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	cfg3.ServerAddress = cfg.ServerAddress
	a3 := runAgent(t, cfg3)
	waitFor(t, "a failed attestation", func() bool {
		return a3.HealthAddr() != nil && metric(t, a3.Agent, `nhid_agent_attestations_total{outcome="error"}`) != ""
	})
	resp, err := http.Get("http://" + a3.HealthAddr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz of an agent that has not attested = %d, want 503", resp.StatusCode)
	}
}

func TestAgent_RestartReusesItsSVIDAndResumesSync(t *testing.T) {
	srv := startServer(t, t.TempDir())
	token, agentID := srv.token(t)
	srv.createEntry(t, agentID, "workload/one")
	dataDir := t.TempDir()
	cfg := agentConfig(t, srv, dataDir, token)
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)
	fetchX509(t, a.Agent)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	two := srv.createEntry(t, agentID, "workload/two")

	// The token was used: the restarted agent must reuse its stored SVID.
	a2 := startAgent(t, cfg)
	select {
	case <-a2.Synced():
	case <-time.After(waitTimeout):
		t.Fatal("restarted agent did not sync within 10s")
	}
	ch := watch(t, a2.Agent)
	waitContext(t, ch, "spiffe://example.org/workload/one", two.GetSpiffeId())
}

func TestAgent_RenewedSVIDKeepsTheSyncGoing(t *testing.T) {
	srv := startServer(t, t.TempDir())
	token, agentID := srv.token(t)
	srv.createEntry(t, agentID, "workload/x")
	dataDir := t.TempDir()
	cfg := agentConfig(t, srv, dataDir, token)
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)
	ch := watch(t, a.Agent)
	waitContext(t, ch, "spiffe://example.org/workload/x")
	before := storedSerial(t, dataDir)

	agent.RenewNow(a.Agent)
	waitFor(t, "a renewed agent SVID on disk", func() bool {
		s, err := fileSerial(dataDir)
		return err == nil && s != before
	})

	y := srv.createEntry(t, agentID, "workload/y")
	waitContext(t, ch, "spiffe://example.org/workload/x", y.GetSpiffeId())
}

func storedSerial(t *testing.T, dataDir string) string {
	t.Helper()
	s, err := fileSerial(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fileSerial is the serial of the agent SVID stored in dataDir.
func fileSerial(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "agent_svid.pem")
	s, err := x509svid.Load(path, path)
	if err != nil {
		return "", err
	}
	return s.Certificates[0].SerialNumber.String(), nil
}

func TestAgent_ServerRefusingTheNode(t *testing.T) {
	tests := []struct {
		name    string
		refuse  func(adminv1.NodeServiceClient, string) error
		wantErr error
		wantMsg string
	}{
		{"evicted join-token node stops and asks for a new token", func(c adminv1.NodeServiceClient, id string) error {
			_, err := c.EvictNode(context.Background(), &adminv1.EvictNodeRequest{SpiffeId: id})
			return err
		}, agent.ErrEvicted, "nhidctl token generate"},
		{"banned node stops", func(c adminv1.NodeServiceClient, id string) error {
			_, err := c.BanNode(context.Background(), &adminv1.BanNodeRequest{SpiffeId: id})
			return err
		}, agent.ErrBanned, "banned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, t.TempDir())
			token, agentID := srv.token(t)
			srv.createEntry(t, agentID, "workload/z")
			dataDir := t.TempDir()
			cfg := agentConfig(t, srv, dataDir, token)
			cfg.TrustBundleFile = srv.bundleFile(t)
			a := startAgent(t, cfg)
			if err := tt.refuse(adminv1.NewNodeServiceClient(srv.admin), agentID); err != nil {
				t.Fatal(err)
			}
			err := a.exitErr(t)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Run = %v, want %v mentioning %q", err, tt.wantErr, tt.wantMsg)
			}
			if _, err := os.Stat(a.SocketPath()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket left behind after stopping: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dataDir, "agent_svid.pem")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused node's SVID was kept: %v", err)
			}
			// A restart must not serve what was minted for the refused node.
			cache, err := agentcache.Open(filepath.Join(dataDir, agentcache.FileName), agentcache.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer cache.Close()
			st, err := cache.Load()
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Entries) != 0 || len(st.SVIDs) != 0 {
				t.Errorf("cache after refusal holds %d entries and %d SVIDs, want none", len(st.Entries), len(st.SVIDs))
			}
		})
	}
}

func TestAgent_WrongTrustBundleNeverAttests(t *testing.T) {
	srv := startServer(t, t.TempDir())
	other := startServer(t, t.TempDir())
	token, _ := srv.token(t)
	cfg := agentConfig(t, srv, t.TempDir(), token)
	cfg.TrustBundleFile = other.bundleFile(t)
	a := runAgent(t, cfg)
	waitFor(t, "a failed attestation", func() bool {
		return a.HealthAddr() != nil && metric(t, a.Agent, `nhid_agent_attestations_total{outcome="error"}`) != ""
	})
	select {
	case <-a.Ready():
		t.Fatal("agent became ready trusting another server's bundle")
	default:
	}
	// The token is still unused: an agent with the right bundle attests.
	cfg2 := agentConfig(t, srv, t.TempDir(), token)
	cfg2.TrustBundleFile = srv.bundleFile(t)
	startAgent(t, cfg2)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func jwtParams(aud string) jwtsvid.Params { return jwtsvid.Params{Audience: aud} }

// metric returns the /metrics line starting with name, or "".
func metric(t *testing.T, a *agent.Agent, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + a.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name) {
			return line
		}
	}
	return ""
}
