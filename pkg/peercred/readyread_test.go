package peercred

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// countingPool counts the buffers taken from and given back to a pool.
type countingPool struct {
	mu        sync.Mutex
	got, back int
}

func (p *countingPool) Get(n int) *[]byte {
	p.mu.Lock()
	p.got++
	p.mu.Unlock()
	b := make([]byte, n)
	return &b
}

func (p *countingPool) Put(*[]byte) {
	p.mu.Lock()
	p.back++
	p.mu.Unlock()
}

func (p *countingPool) counts() (got, back int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got, p.back
}

var _ mem.BufferPool = (*countingPool)(nil)

func TestReadOnReady(t *testing.T) {
	l, path := listen(t, ListenConfig{})
	client := dial(t, path)
	server := accept(t, l).(*conn)

	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	pool := &countingPool{}
	buf, n, err := server.ReadOnReady(64, pool)
	if err != nil || string((*buf)[:n]) != "hello" {
		t.Fatalf("ReadOnReady = %q, %v; want hello", (*buf)[:n], err)
	}
	if got, back := pool.counts(); got != 1 || back != 0 {
		t.Errorf("buffers taken, given back = %d, %d; want 1, 0 (the caller owns the data)", got, back)
	}

	// A read deadline ends the wait, and no buffer is kept.
	if err := server.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := server.ReadOnReady(64, pool); !isTimeout(err) {
		t.Errorf("ReadOnReady past the deadline = %v, want a timeout", err)
	}
	if err := server.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	_ = client.Close()
	if _, _, err := server.ReadOnReady(64, pool); !errors.Is(err, io.EOF) {
		t.Errorf("ReadOnReady after the peer closed = %v, want EOF", err)
	}
	if got, back := pool.counts(); got != back+1 {
		t.Errorf("buffers taken, given back = %d, %d; want every buffer but the first back", got, back)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// recordingListener remembers the connections it hands out.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*conn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if pc, ok := c.(*conn); ok {
		l.mu.Lock()
		l.conns = append(l.conns, pc)
		l.mu.Unlock()
	}
	return c, err
}

// gRPC's transport must find ReadOnReady: if an upgrade stopped looking for
// it, every connection would silently go back to a 32 KiB buffer of its own.
func TestTransportCredentials_GRPCReadsThroughReadOnReady(t *testing.T) {
	inner, path := listen(t, ListenConfig{})
	l := &recordingListener{Listener: inner}
	srv := grpc.NewServer(grpc.Creds(TransportCredentials()))
	srv.RegisterService(&whoAmIService, struct{}{})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})

	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := cc.Invoke(ctx, whoAmIMethod, &emptypb.Empty{}, new(wrapperspb.StringValue)); err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) != 1 {
		t.Fatalf("connections accepted = %d, want 1", len(l.conns))
	}
	if !l.conns[0].readyReads.Load() {
		t.Error("gRPC read the connection without ReadOnReady")
	}
}

func TestAcceptedConnection_IsNoSyscallConn(t *testing.T) {
	l, path := listen(t, ListenConfig{})
	dial(t, path)
	if _, ok := accept(t, l).(syscall.Conn); ok {
		t.Error("accepted connection is a syscall.Conn: gRPC would read its socket options on every connection")
	}
}
