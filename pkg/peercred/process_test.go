package peercred

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// acceptHelper starts a helper in mode, accepts its connection and acks it.
func acceptHelper(t *testing.T, noPeerPidfd bool, mode string) (*helper, *Process) {
	t.Helper()
	l, path := listen(t, ListenConfig{noPeerPidfd: noPeerPidfd})
	h := startHelper(t, mode, path)
	c := accept(t, l)
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatalf("ack helper: %v", err)
	}
	p := processOf(t, c)
	if got, want := int(p.PID()), h.cmd.Process.Pid; got != want {
		t.Fatalf("peer pid = %d, want the helper's %d", got, want)
	}
	return h, p
}

func TestProcess_IsAliveUntilPeerExits(t *testing.T) {
	for _, mode := range pinModes {
		t.Run(mode.name, func(t *testing.T) {
			h, p := acceptHelper(t, mode.noPeerPidfd, helperConnectAndHold)
			if err := p.IsAlive(); err != nil {
				t.Fatalf("IsAlive of running helper = %v, want nil", err)
			}

			_ = h.stdin.Close()
			// Not reaped yet: a zombie has exited and must say so.
			eventually(t, "IsAlive to report the exit", func() bool {
				return errors.Is(p.IsAlive(), ErrProcessExited)
			})
			h.finish(t)
			if err := p.IsAlive(); !errors.Is(err, ErrProcessExited) {
				t.Errorf("IsAlive after reaping = %v, want ErrProcessExited", err)
			}
		})
	}
}

func TestProcess_RecycledPIDIsReportedExited(t *testing.T) {
	requirePIDControl(t)
	for _, mode := range pinModes {
		t.Run(mode.name, func(t *testing.T) {
			h, p := acceptHelper(t, mode.noPeerPidfd, helperConnectAndExit)
			h.finish(t)
			pid := int(p.PID())

			impostor := reusePID(t, pid)
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
				t.Fatalf("impostor at pid %d not visible: %v", pid, err)
			}
			if err := p.IsAlive(); !errors.Is(err, ErrProcessExited) {
				t.Errorf("IsAlive with pid %d recycled = %v, want ErrProcessExited", pid, err)
			}
			impostor.finish(t)
		})
	}
}

// requirePIDControl skips the PID-reuse test only where it legitimately
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

// reusePID starts a helper that gets exactly pid, by setting the pid
// namespace's last allocated pid just below it. Other processes and new
// runtime threads may take the pid first, so it retries.
func reusePID(t *testing.T, pid int) *helper {
	t.Helper()
	const attempts = 200
	for range attempts {
		err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0)
		if err != nil {
			t.Fatalf("cannot steer pid allocation (needs CAP_SYS_ADMIN in the pid namespace): %v", err)
		}
		h := startHelper(t, helperWait, "")
		if h.cmd.Process.Pid == pid {
			return h
		}
		h.finish(t)
	}
	t.Fatalf("no process got pid %d in %d attempts", pid, attempts)
	return nil
}

func countFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(entries)
}

func TestListen_ConnectionsDoNotLeakFDs(t *testing.T) {
	for _, mode := range pinModes {
		t.Run(mode.name, func(t *testing.T) {
			l, path := listen(t, ListenConfig{noPeerPidfd: mode.noPeerPidfd})
			cycle := func() {
				client, err := net.Dial("unix", path)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				server, err := l.Accept()
				if err != nil {
					t.Fatalf("accept: %v", err)
				}
				if err := processOf(t, server).IsAlive(); err != nil {
					t.Fatalf("IsAlive: %v", err)
				}
				_ = client.Close()
				if err := server.Close(); err != nil {
					t.Fatalf("close: %v", err)
				}
			}
			cycle() // the first connection may set up the runtime poller
			before := countFDs(t)
			for range 300 {
				cycle()
			}
			if after := countFDs(t); after != before {
				t.Errorf("open fds: %d before, %d after 300 connections", before, after)
			}
		})
	}
}

func TestProcess_ClosingConnectionReleasesPin(t *testing.T) {
	l, path := listen(t, ListenConfig{})
	dial(t, path)
	c := accept(t, l)
	p := processOf(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	err := p.IsAlive()
	if err == nil || errors.Is(err, ErrProcessExited) || !strings.Contains(err.Error(), "closed") {
		t.Errorf("IsAlive after the connection closed = %v, want a closed-handle error", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestProcess_ConcurrentIsAliveAndClose(t *testing.T) {
	l, path := listen(t, ListenConfig{})
	dial(t, path)
	p := processOf(t, accept(t, l))

	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			// Either answer is fine; what matters is no use of a closed or
			// reused descriptor, which -race and the fd count would expose.
			if err := p.IsAlive(); err != nil && errors.Is(err, ErrProcessExited) {
				t.Errorf("IsAlive of this process = %v", err)
			}
		})
	}
	wg.Go(func() { _ = p.Close() })
	wg.Wait()
}
