package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// server is a running nhid-server process.
type server struct {
	*proc
	dir        string
	adminSock  string
	port       int
	healthPort int
}

// startServer starts nhid-server on dir (fresh when empty). Restarting on
// the same dir and port, as after a crash, is startServerAt.
func startServer(t testing.TB) *server {
	t.Helper()
	dir := shortTempDir(t)
	return startServerAt(t, dir, freePort(t))
}

// startServerAt starts nhid-server on dir and port with the standard
// test flags, then extra ones.
func startServerAt(t testing.TB, dir string, port int, extra ...string) *server {
	t.Helper()
	s := &server{dir: dir, adminSock: filepath.Join(dir, "admin.sock"), port: port, healthPort: freePort(t)}
	s.proc = startProc(t, "nhid-server", filepath.Join(dir, "server.log"), nil, "nhid-server", append([]string{"run",
		"--data-dir", filepath.Join(dir, "data"),
		"--trust-domain", trustDomain,
		"--bind", s.addr(),
		"--admin-socket", s.adminSock,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", s.healthPort),
		"--relying-party-address", "127.0.0.1:0",
		"--log-level", "debug"}, extra...)...)
	eventually(t, waitTimeout, "nhid-server ready", func() error {
		if s.exited() {
			return fmt.Errorf("nhid-server exited:\n%s", s.log())
		}
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", s.healthPort))
	})
	return s
}

func (s *server) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// ctl runs nhidctl against this server's admin socket.
func (s *server) ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return run(ctx, nil, "nhidctl", append([]string{"--socket", s.adminSock}, args...)...)
}

func (s *server) mustCtl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.ctl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ctlJSON runs nhidctl -o json and decodes its output into v.
func (s *server) ctlJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	out := s.mustCtl(t, append([]string{"-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("nhidctl %v printed invalid JSON: %v\n%s", args, err, out)
	}
}

// joinToken generates a join token and returns it with the agent ID it gives.
func (s *server) joinToken(t testing.TB) (token, agentID string) {
	t.Helper()
	var out struct {
		Token    string `json:"token"`
		SPIFFEID string `json:"spiffe_id"`
	}
	s.ctlJSON(t, &out, "token", "generate")
	if out.Token == "" || out.SPIFFEID == "" {
		t.Fatalf("token generate printed no token or spiffe_id: %+v", out)
	}
	return out.Token, out.SPIFFEID
}

// bundlePEM writes the server's trust bundle to a file and returns its path.
func (s *server) bundlePEM(t testing.TB) string {
	t.Helper()
	path := filepath.Join(s.dir, "bundle.pem")
	if err := os.WriteFile(path, []byte(s.mustCtl(t, "bundle", "show", "--format", "pem")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// agent is a running nhid-agent process.
type agent struct {
	*proc
	dir        string
	socket     string
	healthPort int
}

// startAgent attests a new agent to s with a fresh join token.
func startAgent(t testing.TB, s *server) (*agent, string) {
	t.Helper()
	token, agentID := s.joinToken(t)
	a := startAgentAt(t, s, shortTempDir(t), token)
	return a, agentID
}

// startAgentAt starts nhid-agent on dir; token may be empty when dir holds
// an attested agent's state.
func startAgentAt(t testing.TB, s *server, dir, token string) *agent {
	t.Helper()
	a := &agent{dir: dir, socket: filepath.Join(dir, "agent.sock"), healthPort: freePort(t)}
	args := []string{"run",
		"--data-dir", filepath.Join(dir, "data"),
		"--server", s.addr(),
		"--trust-domain", trustDomain,
		"--socket", a.socket,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", a.healthPort),
		"--log-level", "debug"}
	if token != "" {
		// A first start bootstraps trust from the server's bundle; later
		// starts use the bundle the agent persisted.
		args = append(args, "--join-token", token, "--trust-bundle", s.bundlePEM(t))
	}
	a.proc = startProc(t, "nhid-agent", filepath.Join(dir, "agent.log"), nil, "nhid-agent", args...)
	a.waitReady(t)
	return a
}

// startAgentWithConfig starts nhid-agent attested to s with the agent
// config file body yaml (its node attestor section); it does not wait for
// the agent to be ready.
func startAgentWithConfig(t testing.TB, s *server, yaml string) *agent {
	t.Helper()
	dir := shortTempDir(t)
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &agent{dir: dir, socket: filepath.Join(dir, "agent.sock"), healthPort: freePort(t)}
	a.proc = startProc(t, "nhid-agent", filepath.Join(dir, "agent.log"), nil, "nhid-agent", "run",
		"--config", cfg,
		"--data-dir", filepath.Join(dir, "data"),
		"--server", s.addr(),
		"--trust-domain", trustDomain,
		"--trust-bundle", s.bundlePEM(t),
		"--socket", a.socket,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", a.healthPort),
		"--log-level", "debug")
	return a
}

func (a *agent) waitReady(t testing.TB) {
	t.Helper()
	eventually(t, waitTimeout, "nhid-agent ready", func() error {
		if a.exited() {
			return fmt.Errorf("nhid-agent exited:\n%s", a.log())
		}
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", a.healthPort))
	})
}

// endpointEnv points go-spiffe clients at the agent.
func (a *agent) endpointEnv() []string {
	return []string{"SPIFFE_ENDPOINT_SOCKET=unix://" + a.socket}
}
