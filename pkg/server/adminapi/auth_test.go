package adminapi

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

// The test binary doubles as an admin client run under another uid.
const (
	helperEnv       = "NHID_ADMINAPI_TEST_HELPER"
	helperSocketEnv = "NHID_ADMINAPI_TEST_SOCKET"
)

// runHelperClient calls ListEntries on the socket and prints the status
// code and message.
func runHelperClient() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+os.Getenv(helperSocketEnv), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper dial:", err)
		return 2
	}
	defer conn.Close()
	_, err = adminv1.NewEntryServiceClient(conn).ListEntries(ctx, &adminv1.ListEntriesRequest{})
	st := status.Convert(err)
	fmt.Printf("%d %s\n", st.Code(), st.Message())
	return 0
}

func TestAuthorizer_Rule(t *testing.T) {
	a := newAuthorizer(500, []uint32{1000, 1001}, []uint32{50})
	tests := []struct {
		name     string
		uid, gid uint32
		want     bool
	}{
		{"root", 0, 0, true},
		{"root with any group", 0, 999, true},
		{"the server's own uid", 500, 999, true},
		{"a listed uid", 1001, 999, true},
		{"a listed primary gid", 2000, 50, true},
		{"anyone else", 2000, 2000, false},
		{"a listed gid as uid does not count", 50, 2000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.allowed(tt.uid, tt.gid); got != tt.want {
				t.Errorf("allowed(uid %d, gid %d) = %v, want %v", tt.uid, tt.gid, got, tt.want)
			}
		})
	}
}

func TestAuthorizePeer_WithoutKernelCredentialsIsPermissionDenied(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "plain.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	unary, stream := AuthorizePeer(nil, nil)
	srv := grpc.NewServer(grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	h := newHarness(t, harnessOptions{})
	h.svc.Register(srv)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn := dial(t, sock)

	_, err = adminv1.NewEntryServiceClient(conn).ListEntries(testCtx(t), &adminv1.ListEntriesRequest{})
	requireCode(t, err, codes.PermissionDenied, "no kernel credentials")
	w, err := healthpb.NewHealthClient(conn).Watch(testCtx(t), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	requireCode(t, err, codes.PermissionDenied, "no kernel credentials")
}

// TestAuthorizePeer_OtherUsers runs real clients under other uids (as root)
// or stands in for a server running as another user (as non-root), so the
// kernel's credentials decide.
func TestAuthorizePeer_OtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		testOtherUsersAsNonRoot(t)
		return
	}
	tests := []struct {
		name      string
		uid, gid  uint32
		uids      []uint32
		gids      []uint32
		wantCode  codes.Code
		wantInMsg string
	}{
		{"unlisted uid is refused", 65534, 65534, nil, nil, codes.PermissionDenied, "uid 65534 is not allowed"},
		{"listed uid is allowed", 65534, 65534, []uint32{65534}, nil, codes.OK, ""},
		{"listed primary gid is allowed", 65534, 65533, nil, []uint32{65533}, codes.OK, ""},
		{"unlisted gid is refused", 65534, 65533, []uint32{1000}, []uint32{65534}, codes.PermissionDenied, "uid 65534"},
	}
	bin := copyTestBinary(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, withAuth(newAuthorizer(0, tt.uids, tt.gids)))
			if err := os.Chmod(filepath.Dir(h.socket), 0o755); err != nil {
				t.Fatal(err)
			}
			code, msg := runAs(t, bin, h.socket, tt.uid, tt.gid)
			if code != tt.wantCode || !strings.Contains(msg, tt.wantInMsg) {
				t.Errorf("child got %v %q, want %v containing %q", code, msg, tt.wantCode, tt.wantInMsg)
			}
		})
	}
}

func testOtherUsersAsNonRoot(t *testing.T) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	other := uid + 1
	tests := []struct {
		name     string
		auth     *authorizer
		wantCode codes.Code
	}{
		{"server running as another user refuses", newAuthorizer(other, nil, nil), codes.PermissionDenied},
		{"listed uid is allowed", newAuthorizer(other, []uint32{uid}, nil), codes.OK},
		{"listed primary gid is allowed", newAuthorizer(other, nil, []uint32{gid}), codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, withAuth(tt.auth))
			_, err := h.entries.ListEntries(testCtx(t), &adminv1.ListEntriesRequest{})
			requireCode(t, err, tt.wantCode)
		})
	}
}

// copyTestBinary puts the test binary where other users can run it: the
// build cache is private to root.
func copyTestBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "adminapi.test")
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

func runAs(t *testing.T, bin, socket string, uid, gid uint32) (codes.Code, string) {
	t.Helper()
	ctx := testCtx(t)
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{helperEnv + "=1", helperSocketEnv + "=" + socket}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", uid, err, stderr.String())
	}
	var code int
	var msg string
	line := strings.TrimSpace(string(out))
	if _, err := fmt.Sscanf(line, "%d", &code); err != nil {
		t.Fatalf("helper printed %q", line)
	}
	if _, rest, ok := strings.Cut(line, " "); ok {
		msg = rest
	}
	return codes.Code(code), msg
}
