package peercred

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

const waitTimeout = 10 * time.Second

// pinModes are the two ways a peer gets pinned; every behaviour must hold
// for both.
var pinModes = []struct {
	name        string
	noPeerPidfd bool
}{
	{name: "SO_PEERPIDFD", noPeerPidfd: false},
	{name: "pidfd_open_fallback", noPeerPidfd: true},
}

// socketPath returns a path for a socket in a fresh directory short enough
// for sun_path (t.TempDir embeds the test name and can be too long).
func socketPath(t *testing.T) string {
	t.Helper()
	return socketPathB(t)
}

func socketPathB(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "peercred")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "s.sock")
}

func listen(t *testing.T, cfg ListenConfig) (net.Listener, string) {
	t.Helper()
	path := socketPath(t)
	l, err := cfg.Listen(path)
	if err != nil {
		t.Fatalf("Listen(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, path
}

// accept waits for the next identified connection.
func accept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { _ = r.c.Close() })
		return r.c
	case <-time.After(waitTimeout):
		_ = l.Close() // unblocks the goroutine
		t.Fatal("no connection accepted")
		return nil
	}
}

func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func processOf(t *testing.T, c net.Conn) *Process {
	t.Helper()
	p, ok := ProcessOf(c)
	if !ok {
		t.Fatalf("ProcessOf(%T) found no process", c)
	}
	return p
}

type ids struct{ PID, UID, GID int64 }

func TestListen_SelfConnectionSeesOwnCredentials(t *testing.T) {
	for _, mode := range pinModes {
		t.Run(mode.name, func(t *testing.T) {
			l, path := listen(t, ListenConfig{noPeerPidfd: mode.noPeerPidfd})
			dial(t, path)
			p := processOf(t, accept(t, l))

			want := ids{int64(os.Getpid()), int64(os.Geteuid()), int64(os.Getegid())}
			got := ids{int64(p.PID()), int64(p.UID()), int64(p.GID())}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("peer credentials (-want +got):\n%s", diff)
			}
			if err := p.IsAlive(); err != nil {
				t.Errorf("IsAlive of this very process = %v, want nil", err)
			}
		})
	}
}

func TestListen_SocketIsWorldConnectable(t *testing.T) {
	_, path := listen(t, ListenConfig{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o777 {
		t.Errorf("socket mode = %#o, want 0777", got)
	}
}

func TestListen_CreatesMissingDirectory(t *testing.T) {
	path := filepath.Join(filepath.Dir(socketPath(t)), "run", "nhid", "s.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer l.Close()
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o755 {
		t.Errorf("directory mode = %#o, want 0755", got)
	}
}

func TestListen_ExistingPaths(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, path string)
		wantErr string // empty: Listen must succeed
	}{
		{
			name: "stale socket nobody serves is replaced",
			setup: func(t *testing.T, path string) {
				ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				ul.SetUnlinkOnClose(false)
				_ = ul.Close()
			},
		},
		{
			name: "socket another listener serves is refused",
			setup: func(t *testing.T, path string) {
				other, err := net.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = other.Close() })
			},
			wantErr: "another process is listening",
		},
		{
			name: "regular file is refused",
			setup: func(t *testing.T, path string) {
				if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: "not a socket",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := socketPath(t)
			tt.setup(t, path)
			before, _ := os.Lstat(path)
			l, err := Listen(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				defer l.Close()
				dial(t, path)
				processOf(t, accept(t, l))
				return
			}
			if err == nil {
				l.Close()
				t.Fatalf("Listen succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Listen error = %q, want it to contain %q", err, tt.wantErr)
			}
			after, statErr := os.Lstat(path)
			if statErr != nil || !os.SameFile(before, after) {
				t.Errorf("refused Listen changed the existing file (stat err %v)", statErr)
			}
		})
	}
}

func TestListen_InvalidPathsAreRejected(t *testing.T) {
	tests := []struct {
		name, path, wantErr string
	}{
		{"empty", "", "must not be empty"},
		{"abstract", "@nhid", "abstract"},
		{"too long", "/tmp/" + strings.Repeat("x", 200), "longer than"},
		{"NUL byte", "/tmp/a\x00b", "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Listen(tt.path)
			if err == nil {
				l.Close()
				t.Fatal("Listen succeeded, want error")
			}
			if !strings.Contains(err.Error(), "socket path") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to name the socket path and contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestListen_ClosesSocketFileOnClose(t *testing.T) {
	path := socketPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: stat err = %v, want not-exist", err)
	}
}

// syncBuffer is a log sink safe for the accept goroutine to write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A peer that connected and was reaped before Accept cannot be pinned by
// pidfd_open: its connection must be dropped, logged, and Accept must go on
// to the next one rather than fail the server loop.
func TestListen_UnpinnablePeerIsClosedAndAcceptContinues(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	l, path := listen(t, ListenConfig{Log: log, noPeerPidfd: true})

	h := startHelper(t, helperConnectNoAck, path)
	deadPID := h.cmd.Process.Pid
	h.finish(t)
	dial(t, path)

	p := processOf(t, accept(t, l))
	if got := int(p.PID()); got != os.Getpid() {
		t.Fatalf("accepted peer pid = %d, want this process (%d); the dead helper was %d", got, os.Getpid(), deadPID)
	}
	if got := logs.String(); !strings.Contains(got, "unidentified peer") {
		t.Errorf("log = %q, want a line about the refused peer", got)
	}
}

// With SO_PEERPIDFD a reaped peer may still be pinned (recent kernels hand
// out pidfds for exited tasks), but it must then never look alive.
func TestListen_ReapedPeerIsNeverAlive(t *testing.T) {
	l, path := listen(t, ListenConfig{Log: slog.New(slog.DiscardHandler)})
	h := startHelper(t, helperConnectNoAck, path)
	deadPID := int32(h.cmd.Process.Pid)
	h.finish(t)
	dial(t, path)

	// The helper connected first, so its connection is the first accepted
	// unless it was refused, in which case ours is.
	p := processOf(t, accept(t, l))
	switch p.PID() {
	case deadPID:
		if err := p.IsAlive(); !errors.Is(err, ErrProcessExited) {
			t.Errorf("IsAlive of reaped peer = %v, want ErrProcessExited", err)
		}
	case int32(os.Getpid()):
		// The reaped peer was refused outright, which is also safe.
	default:
		t.Errorf("accepted unexpected peer pid %d (helper %d, self %d)", p.PID(), deadPID, os.Getpid())
	}
}

func TestAccept_PidfdIsCloseOnExec(t *testing.T) {
	for _, mode := range pinModes {
		t.Run(mode.name, func(t *testing.T) {
			l, path := listen(t, ListenConfig{noPeerPidfd: mode.noPeerPidfd})
			for range 2 { // the first and a later one, after the kernel's habit is known
				dial(t, path)
				p := processOf(t, accept(t, l))
				flags, err := unix.FcntlInt(uintptr(p.pidfd), unix.F_GETFD, 0)
				if err != nil {
					t.Fatal(err)
				}
				if flags&unix.FD_CLOEXEC == 0 {
					t.Error("pidfd is inherited by child processes (no FD_CLOEXEC)")
				}
			}
		})
	}
}
