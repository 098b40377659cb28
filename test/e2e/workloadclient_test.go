package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// withHeader adds the Workload Endpoint's security header, which go-spiffe
// sends and raw clients must add themselves.
func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

// dialWorkload returns the generated Workload API client on a connection
// of its own to the agent socket, for calls go-spiffe would not make.
func dialWorkload(t testing.TB, socket string) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

// clientOver speaks gRPC over c, an already connected socket, once.
func clientOver(t testing.TB, c net.Conn) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	var used atomic.Bool
	conn, err := grpc.NewClient("passthrough:///agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used.Swap(true) {
				return nil, errors.New("the connection was already used")
			}
			return c, nil
		}))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

// firstX509 opens a FetchX509SVID stream and returns its first message.
func firstX509(ctx context.Context, c workload.SpiffeWorkloadAPIClient) (*workload.X509SVIDResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

// firstRecv returns the error of a stream's first message, or of opening it.
func firstRecv[M any](stream interface{ Recv() (M, error) }, err error) error {
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// workloadCall makes one Workload API call and returns its error (a
// stream's first Recv error).
type workloadCall struct {
	name string
	call func(context.Context, workload.SpiffeWorkloadAPIClient) error
}

// workloadCalls covers every RPC of the Workload API with a well-formed
// request; token is a JWT-SVID for audience "aud".
func workloadCalls(token string) []workloadCall {
	return []workloadCall{
		{"FetchX509SVID", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
			return firstRecv(c.FetchX509SVID(ctx, &workload.X509SVIDRequest{}))
		}},
		{"FetchX509Bundles", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
			return firstRecv(c.FetchX509Bundles(ctx, &workload.X509BundlesRequest{}))
		}},
		{"FetchJWTSVID", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"aud"}})
			return err
		}},
		{"FetchJWTBundles", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
			return firstRecv(c.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{}))
		}},
		{"ValidateJWTSVID", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
			_, err := c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "aud", Svid: token})
			return err
		}},
	}
}

// selfSHA256 is the hash of this test binary, which the unix attestor
// gives this process and every helper it starts.
func selfSHA256(t testing.TB) string {
	t.Helper()
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// registerSelf registers an identity for this test binary run as this
// user, waits until the agent serves it to this process and returns it.
func registerSelf(t testing.TB, s *server, a *agent, agentID, name string) string {
	t.Helper()
	id := "spiffe://" + trustDomain + "/e2e/" + name
	s.mustCtl(t, "entry", "create", "--spiffe-id", id, "--parent-id", agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+selfSHA256(t), "--purpose", "e2e test process")
	client := dialWorkload(t, a.socket)
	eventually(t, waitTimeout, "the agent serves this process "+id, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		resp, err := firstX509(withHeader(ctx), client)
		if err != nil {
			return err
		}
		if got := resp.GetSvids(); len(got) != 1 || got[0].GetSpiffeId() != id {
			return fmt.Errorf("got %d SVIDs, want one for %s", len(got), id)
		}
		return nil
	})
	return id
}

// fetchJWT returns a JWT-SVID for this process and audience.
func fetchJWT(t testing.TB, a *agent, audience string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := dialWorkload(t, a.socket).FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{audience}})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if len(resp.GetSvids()) != 1 {
		t.Fatalf("FetchJWTSVID returned %d SVIDs, want 1", len(resp.GetSvids()))
	}
	return resp.GetSvids()[0].GetSvid()
}

// pid is the agent's process id.
func (a *agent) pid() int { return a.cmd.Process.Pid }

// openFDs counts the agent's open file descriptors.
func (a *agent) openFDs() (int, error) {
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(a.pid()) + "/fd")
	if err != nil {
		return 0, err
	}
	return len(entries), nil
}

// goroutines reads the agent's go_goroutines gauge.
func (a *agent) goroutines() (int, error) {
	v, err := metric(fmt.Sprintf("http://127.0.0.1:%d/metrics", a.healthPort), "go_goroutines")
	return int(v), err
}

// raiseFDLimit makes sure this process, and the processes it starts after
// the call, may open n files. syscall.Setrlimit (not x/sys) is what makes
// children inherit the new limit.
func raiseFDLimit(t testing.TB, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur = n
	if lim.Max < n {
		lim.Max = n // root (CI) may raise the hard limit
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		requireCI(t, fmt.Sprintf("cannot raise RLIMIT_NOFILE to %d: %v", n, err))
	}
}

// requireCI skips a test that cannot run here, unless CI is set: there it
// must run, so the test fails.
func requireCI(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "" {
		t.Skip(why)
	}
	t.Fatalf("CI is set, but %s", why)
}

// peekReadable waits until c has data to read, without consuming it.
// gRPC servers send their SETTINGS frame as soon as they take a
// connection, so this tells that the agent has accepted c (and pinned its
// peer) while leaving the frame for the gRPC client.
func peekReadable(c *net.UnixConn, timeout time.Duration) error {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var peekErr error
	buf := make([]byte, 1)
	if err := raw.Read(func(fd uintptr) bool {
		n, _, peekErr = unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !errors.Is(peekErr, unix.EAGAIN)
	}); err != nil {
		return err
	}
	if peekErr != nil {
		return peekErr
	}
	if n == 0 {
		return io.EOF
	}
	return nil
}
