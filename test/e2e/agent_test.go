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
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// probeResult is one line the probe prints.
type probeResult struct {
	SPIFFEIDs    []string `json:"spiffe_ids"`
	Serials      []string `json:"serials"`
	Token        string   `json:"token"`
	Subject      string   `json:"subject"`
	TrustDomains []string `json:"trust_domains"`
	Peer         string   `json:"peer"`
}

// copyProbe copies the probe binary into dir, appending extra bytes so the
// copy can have a hash of its own while still running the same code.
func copyProbe(t *testing.T, dir, name, extra string) (path, sum string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(binDir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, extra...)
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	return path, hex.EncodeToString(h[:])
}

// runProbe runs a probe binary once and decodes its single result.
func runProbe(t *testing.T, a *agent, path string, args ...string) (probeResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), a.endpointEnv()...)
	out, err := cmd.Output()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return probeResult{}, fmt.Errorf("%w: %s", err, strings.TrimSpace(string(exitErr.Stderr)))
	}
	if err != nil {
		return probeResult{}, err
	}
	var r probeResult
	if err := json.Unmarshal(out, &r); err != nil {
		return probeResult{}, fmt.Errorf("probe printed %q: %w", out, err)
	}
	return r, nil
}

// fetchEventually retries a probe until it is served (an entry reaches the
// agent and its SVID is minted asynchronously).
func fetchEventually(t *testing.T, a *agent, path string, args ...string) probeResult {
	t.Helper()
	var r probeResult
	eventually(t, waitTimeout, "the probe is served", func() error {
		var err error
		r, err = runProbe(t, a, path, args...)
		return err
	})
	return r
}

// watchProbe runs `probe watch` and delivers each result line.
func watchProbe(t *testing.T, a *agent, path string) <-chan probeResult {
	t.Helper()
	cmd := exec.Command(path, "watch")
	cmd.Env = append(os.Environ(), a.endpointEnv()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ch := make(chan probeResult, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r probeResult
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				ch <- r
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	return ch
}

func nextResult(t *testing.T, ch <-chan probeResult, timeout time.Duration, what string, cond func(probeResult) bool) probeResult {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatalf("waiting for %s: the watching probe exited", what)
			}
			if cond(r) {
				return r
			}
		case <-deadline:
			t.Fatalf("waiting for %s: nothing within %s", what, timeout)
		}
	}
}

func uidSelector() string { return "unix:uid:" + strconv.Itoa(os.Getuid()) }

func TestAgent_ServesGoSpiffeClientsX509AndJWT(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a, agentID := startAgent(t, s)
	probe, sum := copyProbe(t, a.dir, "probe", "")
	id := "spiffe://" + trustDomain + "/workload/probe"
	s.mustCtl(t, "entry", "create", "--spiffe-id", id, "--parent-id", agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+sum, "--purpose", "e2e probe", "--owner", "qa@example.org")

	r := fetchEventually(t, a, probe, "x509")
	if len(r.SPIFFEIDs) != 1 || r.SPIFFEIDs[0] != id {
		t.Fatalf("FetchX509Context gave %v, want [%s]", r.SPIFFEIDs, id)
	}
	j, err := runProbe(t, a, probe, "jwt", "spiffe://"+trustDomain+"/relying-party")
	if err != nil {
		t.Fatalf("FetchJWTSVID + ValidateJWTSVID: %v", err)
	}
	if j.Subject != id || j.Token == "" {
		t.Fatalf("JWT-SVID subject %q (token %d bytes), want %s", j.Subject, len(j.Token), id)
	}
}

func TestAgent_SHA256SelectorServesOnlyThatBinary(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a, agentID := startAgent(t, s)
	allowed, sum := copyProbe(t, a.dir, "allowed", "")
	other, otherSum := copyProbe(t, a.dir, "other", "\x00different build")
	if sum == otherSum {
		t.Fatal("the two probe copies have the same hash")
	}
	id := "spiffe://" + trustDomain + "/workload/hashed"
	s.mustCtl(t, "entry", "create", "--spiffe-id", id, "--parent-id", agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+sum)

	if r := fetchEventually(t, a, allowed, "x509"); len(r.SPIFFEIDs) != 1 || r.SPIFFEIDs[0] != id {
		t.Fatalf("the registered binary got %v, want [%s]", r.SPIFFEIDs, id)
	}
	_, err := runProbe(t, a, other, "x509")
	if err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Fatalf("a different binary with the same uid: got %v, want PermissionDenied", err)
	}
}

func TestAgent_EntryDeletionWithdrawsIdentityFromOpenStream(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a, agentID := startAgent(t, s)
	probe, sum := copyProbe(t, a.dir, "probe", "")
	id := "spiffe://" + trustDomain + "/workload/short-lived"
	out := s.mustCtl(t, "-o", "json", "entry", "create", "--spiffe-id", id, "--parent-id", agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+sum)
	var created struct {
		Entry struct {
			ID string `json:"id"`
		} `json:"entry"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	fetchEventually(t, a, probe, "x509")

	updates := watchProbe(t, a, probe)
	nextResult(t, updates, waitTimeout, "the first X.509 context", func(r probeResult) bool {
		return len(r.SPIFFEIDs) == 1 && r.SPIFFEIDs[0] == id
	})
	s.mustCtl(t, "entry", "delete", created.Entry.ID)
	nextResult(t, updates, waitTimeout, "the identity's withdrawal", func(r probeResult) bool {
		return len(r.SPIFFEIDs) == 0
	})
}

func TestAgent_ServesCachedSVIDAfterRestartWithServerDown(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a, agentID := startAgent(t, s)
	probe, sum := copyProbe(t, a.dir, "probe", "")
	id := "spiffe://" + trustDomain + "/workload/cached"
	s.mustCtl(t, "entry", "create", "--spiffe-id", id, "--parent-id", agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+sum)
	before := fetchEventually(t, a, probe, "x509")

	s.kill9()
	a.stop()
	a = startAgentAt(t, s, a.dir, "")
	after, err := runProbe(t, a, probe, "x509")
	if err != nil {
		t.Fatalf("the restarted agent with the server down: %v", err)
	}
	if len(after.SPIFFEIDs) != 1 || after.SPIFFEIDs[0] != id || after.Serials[0] != before.Serials[0] {
		t.Fatalf("after restart got %v %v, want the cached SVID %v %v", after.SPIFFEIDs, after.Serials, before.SPIFFEIDs, before.Serials)
	}
}

func TestAgent_RotationReachesWatchingClient(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a, agentID := startAgent(t, s)
	probe, sum := copyProbe(t, a.dir, "probe", "")
	id := "spiffe://" + trustDomain + "/workload/rotating"
	// 60 s is the shortest TTL the server accepts; rotation comes at about half.
	s.mustCtl(t, "entry", "create", "--spiffe-id", id, "--parent-id", agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+sum, "--x509-ttl", "60s")
	fetchEventually(t, a, probe, "x509")
	updates := watchProbe(t, a, probe)
	first := nextResult(t, updates, waitTimeout, "the first X.509 context", func(r probeResult) bool { return len(r.Serials) == 1 })
	nextResult(t, updates, 75*time.Second, "a rotated SVID", func(r probeResult) bool {
		return len(r.Serials) == 1 && r.Serials[0] != first.Serials[0]
	})
}
