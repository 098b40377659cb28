package peercred

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nhid/nhid/pkg/telemetry"
)

// maxSocketPath is the room in sockaddr_un.sun_path, less the terminating NUL.
const maxSocketPath = 107

// probeTimeout bounds the dial that checks whether an existing socket file
// is still served. A live server answers at once; a full backlog is treated
// as alive, never as stale.
const probeTimeout = 2 * time.Second

// ListenConfig configures Listen. The zero value is ready to use.
type ListenConfig struct {
	// Log receives one line per connection refused because its peer could
	// not be identified. Defaults to slog.Default().
	Log *slog.Logger

	// noPeerPidfd makes identification take the pidfd_open fallback used on
	// kernels without SO_PEERPIDFD (older than 6.5). A test seam.
	noPeerPidfd bool
}

// Listen is ListenConfig{}.Listen.
func Listen(path string) (net.Listener, error) {
	return ListenConfig{}.Listen(path)
}

// Listen creates a Unix socket at path and listens on it. It creates the
// parent directory (0755) if missing and replaces a stale socket file, but
// refuses to touch a socket another process is serving or a file that is not
// a socket. The socket is made 0777: who may call is decided by the caller
// from the peer's credentials and by the mode of the directory.
//
// Every accepted connection carries the *Process at its other end (see
// ProcessOf); a connection whose peer cannot be identified is logged and
// closed, and Accept waits for the next one.
func (c ListenConfig) Listen(path string) (net.Listener, error) {
	if err := validateSocketPath(path); err != nil {
		return nil, err
	}
	if err := prepareSocketPath(path); err != nil {
		return nil, err
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		_ = ul.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	return &listener{UnixListener: ul, log: log, noPeerPidfd: c.noPeerPidfd}, nil
}

func validateSocketPath(path string) error {
	switch {
	case path == "":
		return errors.New("socket path: must not be empty")
	case strings.HasPrefix(path, "@"):
		return fmt.Errorf("socket path %q: abstract sockets are not supported (they have no file mode)", path)
	case strings.ContainsRune(path, 0):
		return fmt.Errorf("socket path %q: contains a NUL byte", path)
	case len(path) > maxSocketPath:
		return fmt.Errorf("socket path %q: longer than %d bytes", path, maxSocketPath)
	}
	return nil
}

// prepareSocketPath makes sure path can be bound: its directory exists and
// nothing is left at path but, at most, a socket nobody serves.
func prepareSocketPath(path string) error {
	if err := ensureDir(filepath.Dir(path)); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("socket path %s: exists and is not a socket; refusing to replace it", path)
	}
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		_ = conn.Close()
		return fmt.Errorf("socket %s: another process is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// ensureDir creates dir 0755 if it is missing. The mode is set explicitly
// because a restrictive umask would otherwise lock workloads out. An existing
// directory is left as it is: its owner chose its mode.
func ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create socket directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("chmod socket directory %s: %w", dir, err)
	}
	return nil
}

// listener identifies the peer of every connection it accepts.
type listener struct {
	*net.UnixListener
	log         *slog.Logger
	noPeerPidfd bool
}

// Accept waits for a connection whose peer the kernel identifies. Failures
// to identify one peer are not returned: to a server loop an Accept error
// means the listener is broken, and one odd peer must not stop service.
func (l *listener) Accept() (net.Conn, error) {
	for {
		uc, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		proc, err := identify(uc, l.noPeerPidfd)
		if err != nil {
			l.log.Warn("closing connection from unidentified peer",
				telemetry.Address, l.Addr().String(), telemetry.Error, err)
			_ = uc.Close()
			continue
		}
		return &conn{Conn: uc, uc: uc, proc: proc}, nil
	}
}

// conn is an accepted connection and the process at its other end.
//
// It offers the *net.UnixConn only through net.Conn (and ReadOnReady): as a
// syscall.Conn it would have gRPC read four socket options of every
// connection, four system calls, for channelz to display options that mean
// nothing on a Unix socket.
type conn struct {
	net.Conn
	uc   *net.UnixConn
	proc *Process

	// raw and rr serve ReadOnReady (readyread.go); only the goroutine
	// reading the connection uses them. readyReads is set once it has.
	raw        syscall.RawConn
	rr         readyRead
	readyReads atomic.Bool
}

// Close closes the connection and releases the peer's pidfd.
func (c *conn) Close() error {
	err := c.uc.Close()
	if perr := c.proc.Close(); err == nil {
		err = perr
	}
	return err
}

// ProcessOf returns the process at the other end of a connection accepted
// by a listener from Listen. The Process stays valid until c is closed.
func ProcessOf(c net.Conn) (*Process, bool) {
	pc, ok := c.(*conn)
	if !ok {
		return nil, false
	}
	return pc.proc, true
}
