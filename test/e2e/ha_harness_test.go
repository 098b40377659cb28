package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// etcdMember is one etcd member process (test/e2e/etcdmember).
type etcdMember struct {
	*proc
	name, dir          string
	clientURL, peerURL string
	initial            string
}

// startEtcdCluster starts an n-member etcd cluster on loopback and waits
// until every member is healthy.
func startEtcdCluster(t *testing.T, n int) []*etcdMember {
	t.Helper()
	members := make([]*etcdMember, n)
	var initial []string
	for i := range members {
		m := &etcdMember{
			name: fmt.Sprintf("m%d", i), dir: shortTempDir(t),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		}
		members[i] = m
		initial = append(initial, m.name+"="+m.peerURL)
	}
	// The members of a new cluster wait for one another: start all first.
	for _, m := range members {
		m.initial = strings.Join(initial, ",")
		m.start(t)
	}
	for _, m := range members {
		m.waitHealthy(t)
	}
	return members
}

// start runs the member on its data dir and ports.
func (m *etcdMember) start(t *testing.T) {
	t.Helper()
	m.proc = startProc(t, "etcd "+m.name, filepath.Join(m.dir, "etcd.log"), nil, "etcdmember",
		"--name", m.name, "--data-dir", filepath.Join(m.dir, "data"),
		"--client-url", m.clientURL, "--peer-url", m.peerURL, "--initial-cluster", m.initial)
}

// waitHealthy waits until the member answers /health with a leader.
func (m *etcdMember) waitHealthy(t *testing.T) {
	t.Helper()
	eventually(t, 3*waitTimeout, "etcd "+m.name+" healthy", func() error {
		if m.exited() {
			return fmt.Errorf("etcd %s exited:\n%s", m.name, m.log())
		}
		return httpOK(m.clientURL + "/health")
	})
}

func clientURLs(members []*etcdMember) []string {
	out := make([]string, len(members))
	for i, m := range members {
		out[i] = m.clientURL
	}
	return out
}

// startHAServer starts nhid-server on the etcd store of members.
func startHAServer(t *testing.T, members []*etcdMember, prefix string) *server {
	t.Helper()
	dir := shortTempDir(t)
	cfg := filepath.Join(dir, "server.yaml")
	writeFile(t, cfg, fmt.Sprintf(`version: 1
server:
  store:
    kind: etcd
    endpoints: [%s]
    prefix: %s
    request_timeout: 3s
    lease_ttl: 3s
`, strings.Join(clientURLs(members), ", "), prefix))
	s := &server{dir: dir, adminSock: filepath.Join(dir, "admin.sock"), port: freePort(t), healthPort: freePort(t)}
	s.proc = startProc(t, "nhid-server", filepath.Join(dir, "server.log"), nil, "nhid-server", "run",
		"--config", cfg,
		"--data-dir", filepath.Join(dir, "data"),
		"--trust-domain", trustDomain,
		"--bind", s.addr(),
		"--admin-socket", s.adminSock,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", s.healthPort),
		"--relying-party-address", "",
		"--log-level", "debug")
	eventually(t, waitTimeout, "nhid-server ready", func() error {
		if s.exited() {
			return fmt.Errorf("nhid-server exited:\n%s", s.log())
		}
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", s.healthPort))
	})
	return s
}

// syncStreams is how many agents a server syncs.
func (s *server) syncStreams() (float64, error) {
	return metric(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.healthPort), "nhid_agentapi_sync_streams")
}

// startHAAgent starts nhid-agent with several servers, attesting with
// token through whichever it reaches first.
func startHAAgent(t *testing.T, servers []*server, token, bundle string) *agent {
	t.Helper()
	dir := shortTempDir(t)
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.addr())
	}
	a := &agent{dir: dir, socket: filepath.Join(dir, "agent.sock"), healthPort: freePort(t)}
	a.proc = startProc(t, "nhid-agent", filepath.Join(dir, "agent.log"), nil, "nhid-agent", "run",
		"--data-dir", filepath.Join(dir, "data"),
		"--server", strings.Join(addrs, ","),
		"--trust-domain", trustDomain,
		"--socket", a.socket,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", a.healthPort),
		"--join-token", token, "--trust-bundle", bundle,
		"--log-level", "debug")
	a.waitReady(t)
	return a
}

// syncingServer waits until exactly one of servers syncs the agent that
// was started last (the others' counts are in before) and returns it.
func syncingServer(t *testing.T, servers []*server, before []float64) int {
	t.Helper()
	found := -1
	eventually(t, waitTimeout, "the agent's sync stream on a server", func() error {
		found = -1
		for i, s := range servers {
			if s.exited() {
				continue
			}
			n, err := s.syncStreams()
			if err != nil {
				return err
			}
			if n > before[i] {
				found = i
				return nil
			}
		}
		return fmt.Errorf("no server has a new sync stream")
	})
	return found
}

// streamWatch is a `probe watch` process whose stderr is kept: a broken
// Workload API stream shows there as a watch error.
type streamWatch struct {
	updates <-chan probeResult
	mu      sync.Mutex
	stderr  bytes.Buffer
}

func (w *streamWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stderr.Write(p)
}

// errors is what the probe reported about its stream.
func (w *streamWatch) errors() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stderr.String()
}

func watchStream(t *testing.T, a *agent, path string) *streamWatch {
	t.Helper()
	w := &streamWatch{}
	cmd := exec.Command(path, "watch")
	cmd.Env = append(os.Environ(), a.endpointEnv()...)
	cmd.Stderr = w
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ch := make(chan probeResult, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r probeResult
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				ch <- r
			}
		}
	}()
	w.updates = ch
	return w
}
