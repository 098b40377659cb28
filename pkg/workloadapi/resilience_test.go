package workloadapi

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestThousandConnectionsAndAnIdleClient_ServerKeepsAnsweringAndLeaksNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("opens a thousand connections")
	}
	const conns = 1000
	// Per connection: the client's socket, the server's socket and the
	// pinned caller's pidfd.
	raiseFDLimit(t, 3*conns+512)
	ignore := goleak.IgnoreCurrent()
	baseFDs := countFDs(t)

	var mgr *testManager
	t.Run("load", func(t *testing.T) {
		ca := newTestCA(t, "example.org")
		mgr = newTestManager(t, ca)
		mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
		att := &uidAttestor{}
		ts := startServer(t, serverOptions{manager: mgr, attestor: att})

		idle := dialIdle(t, ts)
		defer idle.Close()
		if got := att.calls.Load() + int64(mgr.openSubscriptions()); got != 0 {
			t.Fatalf("an idle connection cost the handler work: %d attestations + subscriptions", got)
		}

		// No deadline: the streams live for the whole test, which may take
		// long on a loaded machine; every wait below has its own bound.
		ctx, cancel := context.WithCancel(withHeader(context.Background()))
		defer cancel()
		streams := openStreams(ctx, t, ts, conns)
		if got := mgr.openSubscriptions(); got != conns {
			t.Fatalf("open subscriptions = %d, want %d", got, conns)
		}

		// The server still answers a newcomer, idle client or not.
		client := ts.client(t)
		if _, err := client.FetchX509Context(testContext(t)); err != nil {
			t.Fatalf("FetchX509Context with %d streams open: %v", conns, err)
		}
		if _, err := client.FetchJWTSVID(testContext(t), jwtsvid.Params{Audience: "db"}); err != nil {
			t.Fatalf("FetchJWTSVID with %d streams open: %v", conns, err)
		}

		// A rotation reaches every stream.
		rotated := mgr.identity("e1", "spiffe://example.org/web", "", selfSelector())
		mgr.setIdentities(rotated)
		streams.expectEveryStreamReceives(t, rotated.Certificates[0].Raw)

		// Clients leave mid-stream.
		cancel()
		streams.close()
		waitFor(t, "every subscription to close", func() bool { return mgr.openSubscriptions() == 0 })
	})

	// Connections wind down asynchronously; goleak retries for about a
	// second, so keep asking until the deadline.
	deadline := time.Now().Add(waitTimeout)
	err := goleak.Find(ignore)
	for err != nil && time.Now().Before(deadline) {
		err = goleak.Find(ignore)
	}
	if err != nil {
		t.Errorf("goroutines leaked: %v", err)
	}
	for countFDs(t) > baseFDs && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := countFDs(t); got > baseFDs {
		t.Errorf("open file descriptors = %d after everything closed, want at most %d", got, baseFDs)
	}
}

// streamSet is many FetchX509SVID streams, each on its own connection.
type streamSet struct {
	conns []*grpc.ClientConn
	msgs  []<-chan recvResult[*workload.X509SVIDResponse]
}

// openStreams opens n streams concurrently and waits for each one's first
// message.
func openStreams(ctx context.Context, t *testing.T, ts *testServer, n int) *streamSet {
	t.Helper()
	s := &streamSet{conns: make([]*grpc.ClientConn, n), msgs: make([]<-chan recvResult[*workload.X509SVIDResponse], n)}
	t.Cleanup(s.close)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			conn, err := grpc.NewClient(ts.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				errs <- err
				return
			}
			s.conns[i] = conn
			stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
				return
			}
			s.msgs[i] = receiveAll(stream)
			if _, err, ok := nextWithin(s.msgs[i]); !ok || err != nil {
				errs <- fmt.Errorf("stream %d: no first message: %v", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return s
}

func (s *streamSet) expectEveryStreamReceives(t *testing.T, leaf []byte) {
	t.Helper()
	for i, ch := range s.msgs {
		resp, err := next(t, ch)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if got := leafOf(t, resp.GetSvids()[0]); string(got) != string(leaf) {
			t.Fatalf("stream %d: message after the rotation does not carry the rotated SVID", i)
		}
	}
}

func (s *streamSet) close() {
	for _, c := range s.conns {
		if c != nil {
			_ = c.Close()
		}
	}
}

// dialIdle connects to the server and sends nothing, not even the HTTP/2
// preface; it returns once the server has accepted the connection.
func dialIdle(t *testing.T, ts *testServer) net.Conn {
	t.Helper()
	for len(ts.accepted) > 0 {
		<-ts.accepted
	}
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	select {
	case <-ts.accepted:
	case <-time.After(waitTimeout):
		t.Fatal("server did not accept the idle connection")
	}
	return c
}

func countFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(entries)
}

// raiseFDLimit makes sure this process may open n files, raising the soft
// limit up to the hard one if needed.
func raiseFDLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d this test needs", lim.Max, n)
	}
	old := lim.Cur
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("setrlimit: %v", err)
	}
	t.Cleanup(func() {
		lim.Cur = old
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
}
