package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// With helperEnv set, the test binary is a helper process instead of the
// test suite (see TestMain): a process that is not the test process, but
// runs the same binary as the same user, so the unix attestor gives it the
// same selectors.
const (
	helperEnv       = "NHID_E2E_HELPER"
	helperSocketEnv = "NHID_E2E_HELPER_SOCKET"

	// helperConnect connects the socket it inherits as fd 3 to
	// $NHID_E2E_HELPER_SOCKET, prints "connected" and holds until stdin
	// closes: the kernel then records it as the peer of a connection the
	// test process uses.
	helperConnect = "connect"
	// helperHold holds until stdin closes.
	helperHold = "hold"
)

// pidAttempts bounds the tries at landing a new process on a given pid:
// concurrent forks and new threads anywhere in the pid namespace may take
// it first.
const pidAttempts = 500

func runHelper(mode string) int {
	switch mode {
	case helperConnect:
		if err := unix.Connect(3, &unix.SockaddrUnix{Name: os.Getenv(helperSocketEnv)}); err != nil {
			fmt.Fprintln(os.Stderr, "helper connect:", err)
			return 2
		}
		fmt.Println("connected")
	case helperHold:
	default:
		fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
		return 2
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// helperProc is a running helper process.
type helperProc struct {
	cmd   *exec.Cmd
	stdin *os.File
	pidfd int // pins the helper itself, for the test's own liveness checks
	once  sync.Once
}

// startHelper runs the test binary in mode. extra, if not nil, becomes
// fd 3; stdout, if not nil, the helper's stdout.
func startHelper(mode string, env []string, extra, stdout *os.File) (*helperProc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+mode), env...)
	cmd.Stdin, cmd.Stderr = r, os.Stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if extra != nil {
		cmd.ExtraFiles = []*os.File{extra}
	}
	err = cmd.Start()
	_ = r.Close()
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("start helper %s: %w", mode, err)
	}
	// Our unreaped child cannot lose its pid, so this pidfd is its.
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		_ = w.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("pidfd_open helper %d: %w", cmd.Process.Pid, err)
	}
	return &helperProc{cmd: cmd, stdin: w, pidfd: pidfd}, nil
}

func (h *helperProc) pid() int { return h.cmd.Process.Pid }

// alive reports whether the helper has not exited (a zombie has).
func (h *helperProc) alive() (bool, error) {
	fds := []unix.PollFd{{Fd: int32(h.pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll helper pidfd: %w", err)
		}
		return n == 0, nil
	}
}

// exit lets the helper exit and reaps it: its pid is free afterwards.
func (h *helperProc) exit() error {
	var err error
	h.once.Do(func() {
		_ = h.stdin.Close()
		err = h.cmd.Wait()
		_ = unix.Close(h.pidfd)
	})
	return err
}

// kill ends the helper at once and reaps it.
func (h *helperProc) kill() {
	_ = h.cmd.Process.Kill()
	_ = h.exit()
}

// connectAsChild returns a connection to socket whose peer, as far as the
// kernel knows, is a helper child process, once the server has accepted it.
func connectAsChild(t *testing.T, socket string) (*net.UnixConn, *helperProc) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	sock := os.NewFile(uintptr(fd), "child-socket")
	defer sock.Close()
	out, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	child, err := startHelper(helperConnect, []string{helperSocketEnv + "=" + socket}, sock, outW)
	_ = outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(child.kill)

	if err := out.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "connected" {
		t.Fatalf("the child did not connect: %q, %v", line, err)
	}
	fc, err := net.FileConn(sock)
	if err != nil {
		t.Fatalf("FileConn: %v", err)
	}
	conn := fc.(*net.UnixConn)
	t.Cleanup(func() { _ = conn.Close() })
	if err := peekReadable(conn, waitTimeout); err != nil {
		t.Fatalf("the agent did not take the child's connection: %v", err)
	}
	return conn, child
}

// takePID starts helpers until one gets pid, steering the kernel's pid
// allocator with /proc/sys/kernel/ns_last_pid. pid must be free.
func takePID(t *testing.T, pid int) *helperProc {
	t.Helper()
	for range pidAttempts {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Fatalf("steer pid allocation (needs CAP_SYS_ADMIN in the pid namespace): %v", err)
		}
		h, err := startHelper(helperHold, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if h.pid() == pid {
			t.Cleanup(h.kill)
			return h
		}
		h.kill()
	}
	t.Fatalf("no process got pid %d in %d attempts", pid, pidAttempts)
	return nil
}

// requirePIDControl skips a PID-reuse test only where it legitimately
// cannot run: outside CI, without root.
func requirePIDControl(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		requireCI(t, "PID reuse needs root to write /proc/sys/kernel/ns_last_pid")
	}
}

// The request is made on a connection whose peer has exited and whose pid
// a live process now holds: the same binary as the same user, which the
// entry matches (this test process is served by it). Only the pidfd the
// agent pinned when it accepted the connection tells them apart.
//
// The peer is recycled before the request rather than during attestation:
// a real agent offers no hook to pause its attestors, and racing them would
// make the test flaky. pkg/workloadapi's
// TestEveryMethod_PIDRecycledDuringAttestationIsRefused recycles the pid
// while the real unix attestor runs.
func TestAgent_CallerWhosePIDWasRecycledIsRefused(t *testing.T) {
	requirePIDControl(t)
	t.Parallel()
	s := startServer(t)
	a, agentID := startAgent(t, s)
	registerSelf(t, s, a, agentID, "recycled-pid")
	token := fetchJWT(t, a, "aud")

	for _, m := range workloadCalls(token) {
		t.Run(m.name, func(t *testing.T) {
			conn, child := connectAsChild(t, a.socket)
			pid := child.pid()
			if err := child.exit(); err != nil {
				t.Fatalf("child: %v", err)
			}
			impostor := takePID(t, pid)

			ctx, cancel := context.WithTimeout(withHeader(context.Background()), waitTimeout)
			defer cancel()
			err := m.call(ctx, clientOver(t, conn))

			if alive, aliveErr := impostor.alive(); !alive || aliveErr != nil {
				t.Fatalf("the impostor on pid %d exited during the request (%v): the test proves nothing", pid, aliveErr)
			}
			st := status.Convert(err)
			if st.Code() != codes.PermissionDenied || st.Message() != "no identity issued" {
				t.Fatalf("%s from pid %d, now another process: %v, want PermissionDenied \"no identity issued\"", m.name, pid, err)
			}
			eventually(t, waitTimeout, "the agent to log why it refused", func() error {
				for line := range strings.SplitSeq(a.log(), "\n") {
					if strings.Contains(line, "workload API caller refused") &&
						strings.Contains(line, fmt.Sprintf("pid=%d ", pid)) &&
						strings.Contains(line, "peer process exited") {
						return nil
					}
				}
				return fmt.Errorf("no refusal of pid %d for an exited peer in the agent log", pid)
			})
		})
	}
}
