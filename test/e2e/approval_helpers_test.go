package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Approvers the e2e server's admin allow-list lets in besides root, which
// runs agent-task and so may not approve its requests.
const (
	approverA = 65534
	approverB = 65533
)

// approvalPolicy sends deploys to one person and payments to two.
const approvalPolicy = `version: 1
rules:
  - name: payments-two-people
    when: request.scopes.exists(s, s.startsWith("payments:"))
    effect: require_approval
    critical: true
    reason: payments need two people
  - name: deploys-need-approval
    when: request.scopes.exists(s, s.startsWith("deploy:"))
    effect: require_approval
    reason: deploys need a person's approval
`

// decisionTimeout bounds a wait that may span a server restart and the
// agent's reconnection backoff.
const decisionTimeout = 60 * time.Second

// approvalCluster is a grant cluster whose server may be restarted on the
// same data, port and admin socket, and whose admin socket other uids
// reach.
type approvalCluster struct {
	*grantCluster
	config string
}

// startApprovalCluster starts nhid-server with approvalPolicy, the given
// approval timeout and approverA and approverB on its admin allow-list,
// an agent, and agent-task's entry.
func startApprovalCluster(t *testing.T, timeout string) *approvalCluster {
	t.Helper()
	if os.Getuid() != 0 {
		requireCI(t, "approvals need nhidctl to run as other users than agent-task: run the e2e tests as root")
	}
	openToApprovers(t)
	dir := shortTempDir(t)
	// Approvers reach the admin socket (0777) through the directory;
	// the data directory below stays the server's (0700).
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	policyPath := filepath.Join(dir, "policy.yaml")
	writeTestFile(t, policyPath, approvalPolicy)
	c := &approvalCluster{grantCluster: &grantCluster{}, config: filepath.Join(dir, "server.yaml")}
	writeTestFile(t, c.config, fmt.Sprintf(`version: 1
server:
  policy: {path: %s}
  admin: {allowed_uids: [%d, %d]}
  approvals: {timeout: %s}
`, policyPath, approverA, approverB, timeout))
	c.s = c.startServer(t, &server{dir: dir, adminSock: filepath.Join(dir, "admin.sock"), port: freePort(t)})
	c.a, c.agentID = startAgent(t, c.s)
	c.taskID = "spiffe://" + trustDomain + "/agent/deployer"
	c.s.mustCtl(t, "entry", "create", "--spiffe-id", c.taskID, "--parent-id", c.agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+binSHA256(t, "agent-task"),
		"--purpose", taskPurpose, "--owner", taskOwner,
		"--scope", "deploy:staging", "--scope", "logs:read", "--scope", "payments:send")
	return c
}

// startServer starts nhid-server on s's directory, port and socket, as
// after a restart, and waits until it is ready.
func (c *approvalCluster) startServer(t *testing.T, s *server) *server {
	t.Helper()
	s.healthPort = freePort(t)
	s.proc = startProc(t, "nhid-server", filepath.Join(s.dir, "server.log"), nil, "nhid-server", "run",
		"--config", c.config,
		"--data-dir", filepath.Join(s.dir, "data"),
		"--trust-domain", trustDomain,
		"--bind", s.addr(),
		"--admin-socket", s.adminSock,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", s.healthPort),
		"--relying-party-address", "127.0.0.1:0",
		"--log-level", "debug")
	eventually(t, waitTimeout, "nhid-server ready", func() error {
		if s.exited() {
			return fmt.Errorf("nhid-server exited:\n%s", s.log())
		}
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", s.healthPort))
	})
	return s
}

// restartServer stops nhid-server gracefully and starts it again on the
// same data, port and admin socket.
func (c *approvalCluster) restartServer(t *testing.T) {
	t.Helper()
	c.s.stop()
	c.s = c.startServer(t, &server{dir: c.s.dir, adminSock: c.s.adminSock, port: c.s.port})
}

var openBinDir sync.Once

// openToApprovers lets other users run the built binaries: the build
// directory is created 0700.
func openToApprovers(t *testing.T) {
	t.Helper()
	var err error
	openBinDir.Do(func() { err = os.Chmod(binDir, 0o755) })
	if err != nil {
		t.Fatal(err)
	}
}

// ctlAs runs nhidctl against c's server as uid (and gid uid).
func (c *approvalCluster) ctlAs(uid uint32, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "nhidctl"), append([]string{"--socket", c.s.adminSock}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Dir = "/"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("nhidctl %s as uid %d: %w: %s", strings.Join(args, " "), uid, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (c *approvalCluster) mustCtlAs(t *testing.T, uid uint32, args ...string) string {
	t.Helper()
	out, err := c.ctlAs(uid, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pendingGrant is what the tests read of `approval list -o json` and
// `approval approve -o json`.
type pendingGrant struct {
	ID                string `json:"id"`
	Status            string `json:"status"`
	SPIFFEID          string `json:"spiffe_id"`
	ApprovalsRequired int    `json:"approvals_required"`
	Critical          bool   `json:"critical"`
	DecisionReason    string `json:"decision_reason"`
	Approvals         []struct {
		Approver string `json:"approver"`
		Approved bool   `json:"approved"`
		Reason   string `json:"reason"`
	} `json:"approvals"`
}

// approvals lists the grants waiting for approval.
func (c *approvalCluster) approvals(t *testing.T) []pendingGrant {
	t.Helper()
	var out struct {
		Grants []pendingGrant `json:"grants"`
	}
	c.s.ctlJSON(t, &out, "approval", "list")
	return out.Grants
}

// approveAs approves id as uid and returns the grant as it then is.
func (c *approvalCluster) approveAs(t *testing.T, uid uint32, id, reason string) pendingGrant {
	t.Helper()
	var out struct {
		Grant pendingGrant `json:"grant"`
	}
	raw := c.mustCtlAs(t, uid, "-o", "json", "approval", "approve", id, "--reason", reason)
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("approval approve -o json printed %q: %v", raw, err)
	}
	return out.Grant
}

// task is a running agent-task whose events arrive as it prints them.
type task struct {
	events <-chan taskEvent
	done   chan struct{}
	exit   int
}

// startTaskProc starts agent-task -o json with args.
func (c *approvalCluster) startTaskProc(t *testing.T, args ...string) *task {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "agent-task"), append([]string{"-o", "json"}, args...)...)
	cmd.Env = append(os.Environ(), c.a.endpointEnv()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	events := make(chan taskEvent, 16)
	tk := &task{events: events, done: make(chan struct{})}
	go func() {
		defer close(tk.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e taskEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				events <- e
			}
		}
		close(events)
		var exitErr *exec.ExitError
		if err := cmd.Wait(); errors.As(err, &exitErr) {
			tk.exit = exitErr.ExitCode()
		} else if err != nil {
			tk.exit = -1
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-tk.done })
	return tk
}

// next waits up to timeout for the task's next event of kind.
func (tk *task) next(t *testing.T, kind string, timeout time.Duration) taskEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-tk.events:
			if !ok {
				t.Fatalf("agent-task exited before a %q event", kind)
			}
			if e.Event == kind {
				return e
			}
			if e.Event == "error" {
				t.Fatalf("agent-task failed: %s: %s", e.Code, e.Message)
			}
		case <-deadline:
			t.Fatalf("no %q event from agent-task within %s", kind, timeout)
		}
	}
}

// wait waits for the task to exit and returns its exit status.
func (tk *task) wait(t *testing.T) int {
	t.Helper()
	for range tk.events { // drain what is left
	}
	select {
	case <-tk.done:
	case <-time.After(waitTimeout):
		t.Fatal("agent-task did not exit")
	}
	return tk.exit
}

// startHAApprovalServers starts n nhid-servers sharing one etcd store,
// configured as startApprovalCluster's server, and waits until the bundle
// holds every server's CA.
func startHAApprovalServers(t *testing.T, n int) []*server {
	t.Helper()
	if os.Getuid() != 0 {
		requireCI(t, "approvals need nhidctl to run as other users than agent-task: run the e2e tests as root")
	}
	openToApprovers(t)
	members := startEtcdCluster(t, 1)
	var servers []*server
	for range n {
		dir := shortTempDir(t)
		if err := os.Chmod(dir, 0o711); err != nil {
			t.Fatal(err)
		}
		policyPath := filepath.Join(dir, "policy.yaml")
		writeTestFile(t, policyPath, approvalPolicy)
		c := &approvalCluster{config: filepath.Join(dir, "server.yaml")}
		writeTestFile(t, c.config, fmt.Sprintf(`version: 1
server:
  store:
    kind: etcd
    endpoints: [%s]
    prefix: /nhid-approvals/
    request_timeout: 3s
    lease_ttl: 3s
  policy: {path: %s}
  admin: {allowed_uids: [%d, %d]}
  approvals: {timeout: 5m}
`, strings.Join(clientURLs(members), ", "), policyPath, approverA, approverB))
		servers = append(servers, c.startServer(t, &server{dir: dir, adminSock: filepath.Join(dir, "admin.sock"), port: freePort(t)}))
	}
	eventually(t, waitTimeout, "every server's CA in the shared bundle", func() error {
		pem := servers[0].mustCtl(t, "bundle", "show", "--format", "pem")
		if got := strings.Count(pem, "BEGIN CERTIFICATE"); got != n {
			return fmt.Errorf("the bundle holds %d CAs", got)
		}
		return nil
	})
	return servers
}
