package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// grantCluster is a server with a grant policy and its relying-party
// endpoint, an agent, and an entry for examples/agent-task.
type grantCluster struct {
	s        *server
	a        *agent
	agentID  string
	rpAddr   string
	taskID   string
	resource string // the resource server's base URL, once started
}

// Identities of the example binaries.
const (
	taskPurpose = "deploys the web app and pays its invoices"
	taskOwner   = "ana@example.org"
)

// startGrantCluster starts nhid-server with policy (YAML) and the
// relying-party endpoint, and an agent, and registers agent-task with a
// scope ceiling of deploy:staging, logs:read and payments:send.
func startGrantCluster(t testing.TB, policy string) *grantCluster {
	t.Helper()
	c := &grantCluster{}
	c.s, c.rpAddr = startPolicyServer(t, policy)
	c.a, c.agentID = startAgent(t, c.s)
	c.taskID = "spiffe://" + trustDomain + "/agent/deployer"
	c.s.mustCtl(t, "entry", "create", "--spiffe-id", c.taskID, "--parent-id", c.agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+binSHA256(t, "agent-task"),
		"--purpose", taskPurpose, "--owner", taskOwner,
		"--scope", "deploy:staging", "--scope", "logs:read", "--scope", "payments:send")
	return c
}

// startPolicyServer starts nhid-server with a config file naming policy,
// and returns it with its relying-party endpoint's address.
func startPolicyServer(t testing.TB, policy string) (*server, string) {
	t.Helper()
	dir := shortTempDir(t)
	policyPath := filepath.Join(dir, "policy.yaml")
	configPath := filepath.Join(dir, "server.yaml")
	writeTestFile(t, policyPath, policy)
	writeTestFile(t, configPath, "version: 1\nserver:\n  policy:\n    path: "+policyPath+"\n")
	s := &server{dir: dir, adminSock: filepath.Join(dir, "admin.sock"), port: freePort(t), healthPort: freePort(t)}
	rpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.proc = startProc(t, "nhid-server", filepath.Join(dir, "server.log"), nil, "nhid-server", "run",
		"--config", configPath,
		"--data-dir", filepath.Join(dir, "data"),
		"--trust-domain", trustDomain,
		"--bind", s.addr(),
		"--admin-socket", s.adminSock,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", s.healthPort),
		"--relying-party-address", rpAddr,
		"--log-level", "debug")
	eventually(t, waitTimeout, "nhid-server ready", func() error {
		if s.exited() {
			return fmt.Errorf("nhid-server exited:\n%s", s.log())
		}
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", s.healthPort))
	})
	return s, rpAddr
}

// startResourceServer registers and starts examples/resource-server on
// the cluster's agent, serving /deploy (deploy:staging) and /pay
// (payments:send).
func (c *grantCluster) startResourceServer(t testing.TB) {
	t.Helper()
	c.s.mustCtl(t, "entry", "create", "--spiffe-id", "spiffe://"+trustDomain+"/svc/deploy-api", "--parent-id", c.agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+binSHA256(t, "resource-server"),
		"--purpose", "example relying party", "--owner", "ops@example.org")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startProc(t, "resource-server", filepath.Join(c.a.dir, "resource-server.log"), c.a.endpointEnv(), "resource-server",
		"--listen", addr, "--nhid-server", c.rpAddr, "--route", "/deploy=deploy:staging", "--route", "/pay=payments:send")
	// It listens once it holds its SVID.
	eventually(t, waitTimeout, "resource-server listening", func() error {
		if p.exited() {
			return fmt.Errorf("resource-server exited:\n%s", p.log())
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
	c.resource = "https://" + addr
}

// taskEvent is one line agent-task prints with -o json.
type taskEvent struct {
	Event     string          `json:"event"`
	SPIFFEID  string          `json:"spiffe_id"`
	Serial    string          `json:"serial"`
	EntryID   string          `json:"entry_id"`
	Purpose   string          `json:"purpose"`
	Owner     string          `json:"owner"`
	GrantID   string          `json:"grant_id"`
	State     string          `json:"state"`
	Reason    string          `json:"reason"`
	Rule      string          `json:"rule"`
	Scopes    []string        `json:"scopes"`
	ExpiresAt int64           `json:"expires_at"`
	N         int             `json:"n"`
	Status    int             `json:"status"`
	Body      json.RawMessage `json:"body"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
}

// taskRun is a finished agent-task: its events and exit status.
type taskRun struct {
	events []taskEvent
	exit   int
}

// find returns the first event of kind, or fails.
func (r taskRun) find(t testing.TB, kind string) taskEvent {
	t.Helper()
	for _, e := range r.events {
		if e.Event == kind {
			return e
		}
	}
	t.Fatalf("agent-task printed no %q event (exit %d): %+v", kind, r.exit, r.events)
	return taskEvent{}
}

// runTask runs agent-task -o json with args to completion.
func (c *grantCluster) runTask(t testing.TB, args ...string) taskRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "agent-task"), append([]string{"-o", "json"}, args...)...)
	cmd.Env = append(os.Environ(), c.a.endpointEnv()...)
	out, err := cmd.Output()
	run := taskRun{events: parseEvents(t, out)}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		run.exit = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("agent-task: %v", err)
	}
	return run
}

func parseEvents(t testing.TB, out []byte) []taskEvent {
	t.Helper()
	var events []taskEvent
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		var e taskEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("agent-task printed %q: %v", line, err)
		}
		events = append(events, e)
	}
	return events
}

// startTask starts agent-task -o json and delivers its events as they
// come; w feeds its stdin.
func (c *grantCluster) startTask(t testing.TB, args ...string) (<-chan taskEvent, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "agent-task"), append([]string{"-o", "json"}, args...)...)
	cmd.Env = append(os.Environ(), c.a.endpointEnv()...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	events := make(chan taskEvent, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e taskEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				events <- e
			}
		}
	}()
	return events, stdin
}

// nextEvent waits for the next event of kind.
func nextEvent(t testing.TB, events <-chan taskEvent, kind string) taskEvent {
	t.Helper()
	deadline := time.After(2 * waitTimeout)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("agent-task exited before a %q event", kind)
			}
			if e.Event == "error" {
				t.Fatalf("agent-task failed: %s: %s", e.Code, e.Message)
			}
			if e.Event == kind {
				return e
			}
		case <-deadline:
			t.Fatalf("no %q event from agent-task within %s", kind, 2*waitTimeout)
		}
	}
}

func binSHA256(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(binDir, name))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func writeTestFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
