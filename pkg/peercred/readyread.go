package peercred

import (
	"errors"
	"io"
	"syscall"

	"google.golang.org/grpc/mem"
)

// ReadOnReady waits until the connection is readable, then reads up to
// bufSize bytes into a buffer taken from pool, which the caller returns to
// it. It returns io.EOF when the peer has closed the connection.
//
// It exists for gRPC's HTTP/2 transport, which reads through this method
// when a connection has it (as it does for a bare *net.UnixConn, which a
// peercred connection wraps). Without it, gRPC allocates a 32 KiB read
// buffer for every connection and holds it for the connection's life: per
// Workload API connection, the largest allocation, and on an agent with
// many idle streams, most of their memory. With it, a buffer is held only
// while a read is being consumed.
func (c *conn) ReadOnReady(bufSize int, pool mem.BufferPool) (*[]byte, int, error) {
	if c.raw == nil {
		raw, err := c.uc.SyscallConn()
		if err != nil {
			return nil, 0, err
		}
		c.raw = raw
		c.rr.read = func(fd uintptr) bool { return c.rr.readFD(int(fd)) }
		c.readyReads.Store(true)
	}
	c.rr.bufSize, c.rr.pool = bufSize, pool
	err := c.raw.Read(c.rr.read)
	buf, n, readErr := c.rr.buf, c.rr.n, c.rr.err
	c.rr = readyRead{read: c.rr.read}
	switch {
	case err != nil: // the poller's: closed, or past a deadline
		if buf != nil {
			pool.Put(buf)
		}
		return nil, 0, err
	case readErr != nil:
		return nil, 0, readErr
	case n == 0:
		pool.Put(buf)
		return nil, 0, io.EOF
	}
	return buf, n, nil
}

// readyRead is the state of one ReadOnReady, kept in the conn so that a
// read allocates nothing.
type readyRead struct {
	read func(fd uintptr) bool // readFD, bound once

	bufSize int
	pool    mem.BufferPool

	buf *[]byte
	n   int
	err error
}

// readFD reads once the poller says fd is readable. It reports false, to
// wait again, when the read would block; the buffer is taken only for a
// read and given back unless it holds data.
func (r *readyRead) readFD(fd int) bool {
	r.buf = r.pool.Get(r.bufSize)
	for {
		// syscall, not x/sys/unix, like net's own reads: the race
		// detector tracks the two packages' syscalls separately.
		r.n, r.err = syscall.Read(fd, *r.buf)
		if !errors.Is(r.err, syscall.EINTR) {
			break
		}
	}
	if r.err != nil {
		r.pool.Put(r.buf)
		r.buf, r.n = nil, 0
		return !errors.Is(r.err, syscall.EAGAIN)
	}
	return true
}
