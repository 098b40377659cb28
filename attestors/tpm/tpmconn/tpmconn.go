// Package tpmconn opens connections to a TPM 2.0 as go-tpm transports: the
// kernel's resource-managed character device (/dev/tpmrm0), or swtpm's TCP
// command channel, which carries raw TPM 2.0 command and response buffers
// (swtpm's "socket" mode; the protocol of tpm2-tss's swtpm TCTI).
package tpmconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultDevice is the kernel's TPM resource manager: it lets several
// processes use the TPM and flushes a process's transient objects when it
// closes the device.
const DefaultDevice = "/dev/tpmrm0"

// maxResponse bounds one TPM response. TPM 2.0 responses are at most
// MAX_RESPONSE_SIZE, 4096 bytes on every TPM go-tpm talks to.
const maxResponse = 4096

// responseHeaderLen is TPM_ST tag (2), size (4) and response code (4).
const responseHeaderLen = 10

// defaultTimeout bounds a swtpm connection whose context has no deadline.
const defaultTimeout = 60 * time.Second

// OpenDevice opens the TPM character device at path with go-tpm's linuxtpm
// transport.
func OpenDevice(path string) (transport.TPMCloser, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open TPM device: %w", err)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return nil, fmt.Errorf("open TPM device %s: not a character device (mode %s)", path, fi.Mode())
	}
	tpm, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open TPM device %s: %w", path, err)
	}
	return tpm, nil
}

// DialSWTPM connects to swtpm's TCP command channel at addr (HOST:PORT).
// The connection ends when ctx does, or at its deadline (60 s when it has
// none), so a wedged emulator cannot hang the caller. swtpm serves one
// connection at a time: close it as soon as the work is done.
func DialSWTPM(ctx context.Context, addr string) (transport.TPMCloser, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to swtpm at %s: %w", addr, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultTimeout)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect to swtpm at %s: %w", addr, err)
	}
	f := &framedConn{conn: conn}
	f.stop = context.AfterFunc(ctx, func() { _ = conn.Close() })
	return transport.FromReadWriteCloser(f), nil
}

// framedConn makes a stream connection behave like a TPM device file: go-tpm
// writes a command and then reads its response with one Read call, which on
// TCP may return part of it. Read therefore reads exactly one response
// (header, then the size it announces) and hands it out.
type framedConn struct {
	conn    net.Conn
	stop    func() bool
	mu      sync.Mutex
	pending []byte
}

func (f *framedConn) Write(p []byte) (int, error) {
	return f.conn.Write(p)
}

func (f *framedConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) == 0 {
		resp, err := readResponse(f.conn)
		if err != nil {
			return 0, err
		}
		f.pending = resp
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

func (f *framedConn) Close() error {
	f.stop()
	err := f.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// readResponse reads one TPM response from r.
func readResponse(r io.Reader) ([]byte, error) {
	buf := make([]byte, responseHeaderLen, maxResponse)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read TPM response header: %w", err)
	}
	size := binary.BigEndian.Uint32(buf[2:6])
	if size < responseHeaderLen || size > maxResponse {
		return nil, fmt.Errorf("TPM response announces %d bytes, want %d to %d", size, responseHeaderLen, maxResponse)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf[responseHeaderLen:]); err != nil {
		return nil, fmt.Errorf("read TPM response body: %w", err)
	}
	return buf, nil
}
