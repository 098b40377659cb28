package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	unixattestor "github.com/nhid/nhid/attestors/unix"
	"github.com/nhid/nhid/pkg/selector"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// impostorEnv, when set, makes TestRecycledPIDImpostorProcess (run alone in
// a child) wait until its stdin closes. That child is the process that
// takes over a caller's pid: the same binary as the caller, under the same
// uid, so every unix selector read from /proc/<pid> is one the caller's
// entry matches.
const impostorEnv = "NHID_WORKLOADAPI_TEST_IMPOSTOR"

// impostorAttempts bounds the tries at landing a new process on a given
// pid: concurrent forks and new runtime threads anywhere in the pid
// namespace may take it first.
const impostorAttempts = 500

func TestRecycledPIDImpostorProcess(t *testing.T) {
	if os.Getenv(impostorEnv) == "" {
		t.Skip("helper process for TestEveryMethod_PIDRecycledDuringAttestationIsRefused")
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// impostor is a live child process holding a recycled pid.
type impostor struct {
	cmd   *exec.Cmd
	stdin *os.File
	pidfd int // pins the impostor itself, for the test's own liveness check
}

func startImpostor() (*impostor, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecycledPIDImpostorProcess$")
	cmd.Env = append(os.Environ(), impostorEnv+"=1")
	cmd.Stdin = r
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	_ = r.Close()
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("start impostor: %w", err)
	}
	// Our unreaped child cannot lose its pid, so this pidfd is its.
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		_ = w.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("pidfd_open impostor %d: %w", cmd.Process.Pid, err)
	}
	return &impostor{cmd: cmd, stdin: w, pidfd: pidfd}, nil
}

func (p *impostor) pid() int { return p.cmd.Process.Pid }

// alive reports whether the impostor has not exited (a zombie has).
func (p *impostor) alive() (bool, error) {
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll impostor pidfd: %w", err)
		}
		return n == 0, nil
	}
}

// kill ends the impostor and reaps it.
func (p *impostor) kill() {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	_ = unix.Close(p.pidfd)
}

// takePID starts impostors until one gets pid, steering the kernel's pid
// allocator with /proc/sys/kernel/ns_last_pid (root only). pid must be
// free: its previous owner exited and was reaped.
func takePID(pid int) (*impostor, error) {
	for range impostorAttempts {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			return nil, fmt.Errorf("steer pid allocation (needs CAP_SYS_ADMIN in the pid namespace): %w", err)
		}
		p, err := startImpostor()
		if err != nil {
			return nil, err
		}
		if p.pid() == pid {
			return p, nil
		}
		p.kill()
	}
	return nil, fmt.Errorf("no process got pid %d in %d attempts", pid, impostorAttempts)
}

// attestation is what recyclingAttestor saw during one Attest.
type attestation struct {
	pid           int32
	sels          selector.Set
	err           error // the real attestor's answer
	setupErr      error // the test could not recycle the pid
	impostorPID   int
	impostorAlive bool // after the real attestor returned
}

// recyclingAttestor is the real unix attestor with a twist: when
// exitCaller is set, it first makes the caller exit, reaps it, and lands
// an impostor on its pid, so the real attestor reads the impostor's
// /proc/<pid>. Only the pidfd pinned at accept can then tell the two apart.
type recyclingAttestor struct {
	inner      unixAttestor
	exitCaller func()

	mu       sync.Mutex
	seen     []attestation
	impostor *impostor
}

func (a *recyclingAttestor) Attest(ctx context.Context, pid int32) (selector.Set, error) {
	rec := attestation{pid: pid}
	defer func() {
		a.mu.Lock()
		a.seen = append(a.seen, rec)
		a.mu.Unlock()
	}()
	var imp *impostor
	if a.exitCaller != nil {
		a.exitCaller()
		imp, rec.setupErr = takePID(int(pid))
		if rec.setupErr != nil {
			return selector.Set{}, rec.setupErr
		}
		a.mu.Lock()
		a.impostor = imp
		a.mu.Unlock()
		rec.impostorPID = imp.pid()
	}
	rec.sels, rec.err = a.inner.Attest(ctx, pid)
	if imp != nil {
		rec.impostorAlive, rec.setupErr = imp.alive()
	}
	return rec.sels, rec.err
}

func (a *recyclingAttestor) attestations() []attestation {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]attestation(nil), a.seen...)
}

func (a *recyclingAttestor) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.impostor != nil {
		a.impostor.kill()
		a.impostor = nil
	}
}

// requirePIDControl skips a PID-reuse test only where it legitimately
// cannot run: outside CI, without root.
func requirePIDControl(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "" {
		t.Skip("PID reuse needs root to write /proc/sys/kernel/ns_last_pid; run as root (CI does) to cover it")
	}
	t.Fatal("CI is set but tests are not running as root: the PID-reuse guarantee cannot be checked")
}

// thisBinarySelectors are the unix selectors the real attestor gives any
// process running this test binary as this user: the caller's child and
// its impostor alike.
func thisBinarySelectors(t *testing.T) []string {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	return []string{selfSelector(), "unix:path:" + exe, "unix:sha256:" + sha256OfFile(t, "/proc/self/exe")}
}

func TestEveryMethod_PIDRecycledDuringAttestationIsRefused(t *testing.T) {
	requirePIDControl(t)
	ua, err := unixattestor.New(unixattestor.Config{Log: discardLog()})
	if err != nil {
		t.Fatalf("unix attestor: %v", err)
	}
	entrySels := thisBinarySelectors(t)
	wantSels, err := selector.ParseSet(entrySels)
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "example.org")
	token, err := ca.mintJWT("spiffe://example.org/web", []string{"aud"}, "p", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		recycle  bool
		wantCode codes.Code
	}{
		{name: "live caller is served", wantCode: codes.OK},
		{name: "caller replaced by a matching impostor on its pid is refused", recycle: true, wantCode: codes.PermissionDenied},
	}
	for _, m := range methodCalls(token) {
		for _, tt := range tests {
			t.Run(m.name+"/"+tt.name, func(t *testing.T) {
				mgr := newTestManager(t, ca)
				mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", entrySels...))
				att := &recyclingAttestor{inner: unixAttestor{ua}}
				t.Cleanup(att.close)
				ts := startServer(t, serverOptions{manager: mgr, attestor: att})
				child := connectFromChild(t, ts)
				if tt.recycle {
					att.exitCaller = child.exit
				}

				err := m.call(withHeader(testContext(t)), child.client(t))

				seen := att.attestations()
				if len(seen) != 1 {
					t.Fatalf("%d attestations, want 1", len(seen))
				}
				rec := seen[0]
				if rec.setupErr != nil {
					t.Fatalf("recycling pid %d: %v", rec.pid, rec.setupErr)
				}
				// Whoever /proc/<pid> described, the entry matched it: only
				// the liveness check can have refused the request.
				if rec.err != nil || !rec.sels.Includes(wantSels) {
					t.Fatalf("the real attestor gave %v, %v; want selectors including %v", rec.sels.Strings(), rec.err, entrySels)
				}
				if tt.recycle {
					if rec.impostorPID != int(rec.pid) || !rec.impostorAlive {
						t.Fatalf("during attestation the impostor had pid %d (alive: %t), want the caller's pid %d, alive",
							rec.impostorPID, rec.impostorAlive, rec.pid)
					}
					assertStatus(t, err, codes.PermissionDenied, "no identity issued")
					if got := mgr.jwtCallCount(); got != 0 {
						t.Errorf("JWT-SVIDs minted for a recycled pid: %d", got)
					}
					return
				}
				if got := status.Code(err); got != tt.wantCode {
					t.Fatalf("%s: %v, want code %v", m.name, err, tt.wantCode)
				}
			})
		}
	}
}
