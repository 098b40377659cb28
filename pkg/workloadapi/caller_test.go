package workloadapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// connectHelperEnv, when set to a socket path, turns the test binary into a
// child that connects the socket it inherited as fd 3 to that path, prints
// "connected" and exits when its stdin closes. The kernel then records the
// child as the peer of a connection the parent test process holds.
const connectHelperEnv = "NHID_WORKLOADAPI_TEST_CONNECT"

func runConnectHelper() {
	if err := unix.Connect(3, &unix.SockaddrUnix{Name: os.Getenv(connectHelperEnv)}); err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(2)
	}
	fmt.Println("connected")
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// childConn is a connection to the server whose peer, as far as the kernel
// knows, is a child process.
type childConn struct {
	conn net.Conn
	exit func() // makes the child exit and reaps it
}

func connectFromChild(t *testing.T, ts *testServer) *childConn {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	sock := os.NewFile(uintptr(fd), "child-socket")
	defer sock.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), connectHelperEnv+"="+ts.path)
	cmd.ExtraFiles = []*os.File{sock}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	var once sync.Once
	exit := func() {
		once.Do(func() {
			_ = stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("child: %v", err)
			}
		})
	}
	t.Cleanup(exit)

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "connected" {
		t.Fatalf("child did not connect: %q, %v", line, err)
	}
	select {
	case <-ts.accepted:
	case <-time.After(waitTimeout):
		t.Fatal("server did not accept the child's connection")
	}
	conn, err := net.FileConn(sock)
	if err != nil {
		t.Fatalf("FileConn: %v", err)
	}
	return &childConn{conn: conn, exit: exit}
}

// client speaks gRPC over the child's connection, once.
func (c *childConn) client(t *testing.T) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	var used atomic.Bool
	cc, err := grpc.NewClient("passthrough:///child",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used.Swap(true) {
				return nil, errors.New("the child's connection was already used")
			}
			return c.conn, nil
		}))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return workload.NewSpiffeWorkloadAPIClient(cc)
}

// hookAttestor attests every caller as this test process's uid and runs
// during once, in the middle of attestation.
type hookAttestor struct {
	during func()
	once   sync.Once
	calls  atomic.Int64
}

func (a *hookAttestor) Attest(context.Context, int32) (selector.Set, error) {
	a.calls.Add(1)
	if a.during != nil {
		a.once.Do(a.during)
	}
	return selfSet(), nil
}

func TestRecycledPIDIsRejected(t *testing.T) {
	tests := []struct {
		name            string
		exitBefore      bool // the child exits before its request
		exitDuring      bool // the child exits while it is attested
		wantCode        codes.Code
		wantAttestCalls int64
	}{
		{name: "live caller is served", wantCode: codes.OK, wantAttestCalls: 1},
		{name: "caller gone before the request is refused unattested", exitBefore: true, wantCode: codes.PermissionDenied},
		{name: "caller gone during attestation is refused", exitDuring: true, wantCode: codes.PermissionDenied, wantAttestCalls: 1},
	}
	ca := newTestCA(t, "example.org")
	token, err := ca.mintJWT("spiffe://example.org/web", []string{"aud"}, "p", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range methodCalls(token) {
		for _, tt := range tests {
			t.Run(m.name+"/"+tt.name, func(t *testing.T) {
				mgr := newTestManager(t, ca)
				mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
				att := &hookAttestor{}
				ts := startServer(t, serverOptions{manager: mgr, attestor: att})
				child := connectFromChild(t, ts)
				if tt.exitDuring {
					// The pid could now be reused: whatever the attestor
					// read, it may not describe the caller.
					att.during = child.exit
				}
				if tt.exitBefore {
					child.exit()
				}

				err := m.call(withHeader(testContext(t)), child.client(t))
				if got := status.Code(err); got != tt.wantCode {
					t.Fatalf("%s: %v, want code %v", m.name, err, tt.wantCode)
				}
				if tt.wantCode == codes.PermissionDenied {
					assertStatus(t, err, codes.PermissionDenied, "no identity issued")
				}
				if got := att.calls.Load(); got != tt.wantAttestCalls {
					t.Errorf("attestor calls = %d, want %d", got, tt.wantAttestCalls)
				}
			})
		}
	}
}

func TestFetchX509SVID_StreamEndsWhenTheAttestedProcessExits(t *testing.T) {
	ca := newTestCA(t, "example.org")
	mgr := newTestManager(t, ca)
	mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	ts := startServer(t, serverOptions{manager: mgr, attestor: &hookAttestor{}})
	child := connectFromChild(t, ts)

	stream, err := child.client(t).FetchX509SVID(withHeader(streamContext(t)), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	msgs := receiveAll(stream)
	if _, err := next(t, msgs); err != nil {
		t.Fatalf("first message while the child lives: %v", err)
	}

	// The connection outlives the process that was attested (as when a
	// child inherits the socket); the rotated SVID must not reach it.
	child.exit()
	mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))

	_, err = next(t, msgs)
	assertStatus(t, err, codes.PermissionDenied, "no identity issued")
}

func TestEveryMethod_DeadCallerIsRefused(t *testing.T) {
	ca := newTestCA(t, "example.org")
	mgr := newTestManager(t, ca)
	mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	ts := startServer(t, serverOptions{manager: mgr, attestor: &hookAttestor{}})
	child := connectFromChild(t, ts)
	child.exit()
	client := child.client(t)
	token, err := ca.mintJWT("spiffe://example.org/web", []string{"aud"}, "p", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	for _, m := range methodCalls(token) {
		t.Run(m.name, func(t *testing.T) {
			err := m.call(withHeader(testContext(t)), client)
			assertStatus(t, err, codes.PermissionDenied, "no identity issued")
		})
	}
	if got := mgr.jwtCallCount(); got != 0 {
		t.Errorf("JWT-SVIDs minted for a dead caller: %d", got)
	}
}

// methodCall makes one Workload API call and returns its error (a stream's
// first Recv error).
type methodCall struct {
	name string
	call func(context.Context, workload.SpiffeWorkloadAPIClient) error
}

// methodCalls covers every RPC with a well-formed request; token is the
// JWT-SVID ValidateJWTSVID validates, for audience "aud".
func methodCalls(token string) []methodCall {
	return []methodCall{
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

// witCalls covers the WIT-SVID profile, which nhid does not implement.
func witCalls() []methodCall {
	return []methodCall{
		{"FetchWITSVID", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
			return firstRecv(c.FetchWITSVID(ctx, &workload.WITSVIDRequest{}))
		}},
		{"FetchWITBundles", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
			return firstRecv(c.FetchWITBundles(ctx, &workload.WITBundlesRequest{}))
		}},
	}
}

func firstRecv[M any](stream interface{ Recv() (M, error) }, err error) error {
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

func TestEveryFetch_CallerWithoutIdentityGetsPermissionDenied(t *testing.T) {
	ca := newTestCA(t, "example.org")
	mgr := newTestManager(t, ca)
	mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", "unix:uid:424242"))
	ts := startServer(t, serverOptions{manager: mgr, attestor: &uidAttestor{}})
	client := ts.client(t)

	tests := []struct {
		name string
		call func(context.Context) error
	}{
		{"FetchX509SVID", func(ctx context.Context) error { _, err := client.FetchX509SVID(ctx); return err }},
		{"FetchX509Context", func(ctx context.Context) error { _, err := client.FetchX509Context(ctx); return err }},
		{"FetchX509Bundles", func(ctx context.Context) error { _, err := client.FetchX509Bundles(ctx); return err }},
		{"FetchJWTBundles", func(ctx context.Context) error { _, err := client.FetchJWTBundles(ctx); return err }},
		{"FetchJWTSVID", func(ctx context.Context) error {
			_, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "aud"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertStatus(t, tt.call(testContext(t)), codes.PermissionDenied, "no identity issued")
		})
	}
	waitFor(t, "every subscription to close", func() bool { return mgr.openSubscriptions() == 0 })
}

func TestEveryMethod_AttestationFailureIsPermissionDeniedWithoutTheReason(t *testing.T) {
	ca := newTestCA(t, "example.org")
	mgr := newTestManager(t, ca)
	att := &fixedAttestor{err: fmt.Errorf("%w: binary /opt/secret-internal-path hash mismatch", attestor.ErrAttestationFailed)}
	ts := startServer(t, serverOptions{manager: mgr, attestor: att})
	client := ts.rawClient(t)
	token, err := ca.mintJWT("spiffe://example.org/web", []string{"aud"}, "p", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range methodCalls(token) {
		t.Run(m.name, func(t *testing.T) {
			assertStatus(t, m.call(withHeader(testContext(t)), client), codes.PermissionDenied, "no identity issued")
		})
	}
	if got, want := att.calls.Load(), int64(len(methodCalls(token))); got != want {
		t.Errorf("attestor calls = %d, want %d", got, want)
	}
}

func TestCallerSelectors_ContextWithoutPeerCredentialsIsRefused(t *testing.T) {
	att := &fixedAttestor{sels: selfSet()}
	_, proc, err := CallerSelectors(context.Background(), att)
	var ce *CallerError
	if !errors.As(err, &ce) {
		t.Fatalf("CallerSelectors: %v, want a *CallerError", err)
	}
	if proc != nil {
		t.Errorf("process = %v, want nil", proc)
	}
	assertStatus(t, err, codes.PermissionDenied, "no identity issued")
	if got := att.calls.Load(); got != 0 {
		t.Errorf("attestor calls = %d, want 0", got)
	}
}
