package peercred

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// identify asks the kernel who is at the other end of uc and pins that
// process with a pidfd.
func identify(uc *net.UnixConn, noPeerPidfd bool) (*Process, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw connection: %w", err)
	}
	var (
		proc   *Process
		optErr error
	)
	ctlErr := raw.Control(func(fd uintptr) {
		proc, optErr = identifyFD(int(fd), noPeerPidfd)
	})
	if ctlErr != nil {
		return nil, fmt.Errorf("raw connection: %w", ctlErr)
	}
	return proc, optErr
}

func identifyFD(fd int, noPeerPidfd bool) (*Process, error) {
	cred, err := peerCred(fd)
	if err != nil {
		return nil, err
	}
	if !noPeerPidfd {
		pidfd, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		switch {
		case err == nil:
			if err := ensureCloseOnExec(pidfd); err != nil {
				_ = unix.Close(pidfd)
				return nil, err
			}
			return newProcess(cred.Pid, cred.Uid, cred.Gid, pidfd), nil
		case !errors.Is(err, unix.ENOPROTOOPT):
			return nil, fmt.Errorf("getsockopt SO_PEERPIDFD (pid %d): %w", cred.Pid, err)
		}
		// Kernels before 6.5 lack SO_PEERPIDFD: pin the pid ourselves.
	}
	return pinByPID(fd, cred)
}

// peerCred reads SO_PEERCRED. A pid of 0 means the peer lives in a pid
// namespace this process cannot see into, so it cannot be pinned.
func peerCred(fd int) (*unix.Ucred, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, fmt.Errorf("getsockopt SO_PEERCRED: %w", err)
	}
	if cred.Pid <= 0 {
		return nil, fmt.Errorf("peer pid %d is not visible from this pid namespace", cred.Pid)
	}
	return cred, nil
}

// pinByPID opens a pidfd for the peer's pid on kernels without
// SO_PEERPIDFD. It leaves a window, from connect to pidfd_open, in which the
// peer could exit and a new process take its pid; closing it needs the
// kernel's help, which is why SO_PEERPIDFD is preferred. Re-reading the
// credentials afterwards makes sure they still name the pid just pinned.
func pinByPID(fd int, cred *unix.Ucred) (*Process, error) {
	pidfd, err := unix.PidfdOpen(int(cred.Pid), 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open(%d): %w", cred.Pid, err)
	}
	again, err := peerCred(fd)
	if err != nil {
		_ = unix.Close(pidfd)
		return nil, err
	}
	if *again != *cred {
		_ = unix.Close(pidfd)
		return nil, fmt.Errorf("peer credentials changed while pinning pid %d (now pid %d)", cred.Pid, again.Pid)
	}
	return newProcess(cred.Pid, cred.Uid, cred.Gid, pidfd), nil
}

// pidfdsComeCloseOnExec is set once a pidfd from SO_PEERPIDFD has been
// seen to come close-on-exec, as Linux makes every pidfd: the kernel does
// not change while we run, so later ones need no check (a system call per
// connection).
var pidfdsComeCloseOnExec atomic.Bool

// ensureCloseOnExec makes sure a pidfd from SO_PEERPIDFD is close-on-exec.
func ensureCloseOnExec(fd int) error {
	if pidfdsComeCloseOnExec.Load() {
		return nil
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC != 0 {
		pidfdsComeCloseOnExec.Store(true)
		return nil
	}
	return setCloseOnExec(fd)
}

// setCloseOnExec makes sure a pidfd the kernel handed over is not inherited
// by child processes. Holding ForkLock keeps a concurrent fork from copying
// it before the flag is set.
func setCloseOnExec(fd int) error {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return fmt.Errorf("set close-on-exec on pidfd: %w", err)
	}
	return nil
}
