// Package peercred identifies the process on the other end of a Unix socket
// using only what the kernel says: SO_PEERCRED for its pid, uid and gid, and
// a pidfd that pins the process, so that a PID recycled after the caller
// exited can never be mistaken for it.
//
// Listen returns a listener whose connections carry a *Process; ProcessOf
// reads it from a connection and, for gRPC servers using
// TransportCredentials, FromContext reads it in a handler.
package peercred

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrProcessExited reports that a pinned process has exited, whether or not
// its PID now belongs to another process.
var ErrProcessExited = errors.New("peer process exited")

// errClosed reports use of a Process after Close; without its pidfd a
// process can no longer be proven alive.
var errClosed = errors.New("peer process handle closed")

// Process is a caller identified by the kernel and pinned by a pidfd. It is
// safe for concurrent use.
type Process struct {
	pid int32
	uid uint32
	gid uint32

	mu    sync.RWMutex // guards pidfd against Close during IsAlive
	pidfd int          // -1 once closed
}

func newProcess(pid int32, uid, gid uint32, pidfd int) *Process {
	return &Process{pid: pid, uid: uid, gid: gid, pidfd: pidfd}
}

// PID is the process id the peer had when it connected.
func (p *Process) PID() int32 { return p.pid }

// UID is the peer's effective user id at connect time.
func (p *Process) UID() uint32 { return p.uid }

// GID is the peer's effective group id at connect time.
func (p *Process) GID() uint32 { return p.gid }

// String describes the process for logs.
func (p *Process) String() string {
	return fmt.Sprintf("pid=%d uid=%d gid=%d", p.pid, p.uid, p.gid)
}

// IsAlive returns nil while the pinned process runs and an error wrapping
// ErrProcessExited once it has exited (a zombie counts as exited). Callers
// check it after attesting a PID, so selectors read from /proc/<pid> are
// known to belong to the process that connected.
func (p *Process) IsAlive() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.pidfd < 0 {
		return fmt.Errorf("pid %d: %w", p.pid, errClosed)
	}
	// A pidfd becomes readable when the process exits. It refers to the
	// process itself, not to the number, so PID reuse cannot fool it.
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd of pid %d: %w", p.pid, err)
		}
		if n == 0 {
			return nil
		}
		if fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0 {
			return fmt.Errorf("pid %d: %w", p.pid, ErrProcessExited)
		}
		return fmt.Errorf("poll pidfd of pid %d: unexpected events %#x", p.pid, fds[0].Revents)
	}
}

// Close releases the pidfd. Closing the connection the process came with
// closes it too; further calls are no-ops.
func (p *Process) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		return nil
	}
	err := unix.Close(p.pidfd)
	p.pidfd = -1
	if err != nil {
		return fmt.Errorf("close pidfd of pid %d: %w", p.pid, err)
	}
	return nil
}
