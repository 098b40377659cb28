package peercred

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// whoAmI is a one-method gRPC service whose handler reports the caller the
// transport credentials identified.
const whoAmIMethod = "/nhid.peercredtest.WhoAmI/Get"

func whoAmIHandler(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	if err := dec(new(emptypb.Empty)); err != nil {
		return nil, err
	}
	p, ok := FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer process")
	}
	if err := p.IsAlive(); err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	return wrapperspb.String(fmt.Sprintf("%d/%d/%d", p.PID(), p.UID(), p.GID())), nil
}

var whoAmIService = grpc.ServiceDesc{
	ServiceName: "nhid.peercredtest.WhoAmI",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Get", Handler: whoAmIHandler}},
}

func serveWhoAmI(t *testing.T) string {
	t.Helper()
	l, path := listen(t, ListenConfig{})
	srv := grpc.NewServer(grpc.Creds(TransportCredentials()))
	srv.RegisterService(&whoAmIService, struct{}{})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

func TestTransportCredentials_HandlerSeesCaller(t *testing.T) {
	path := serveWhoAmI(t)
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer cc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	got := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, whoAmIMethod, &emptypb.Empty{}, got); err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	want := fmt.Sprintf("%d/%d/%d", os.Getpid(), os.Geteuid(), os.Getegid())
	if diff := cmp.Diff(want, got.GetValue()); diff != "" {
		t.Errorf("caller seen by handler (-want +got):\n%s", diff)
	}
}

func TestTransportCredentials_RefusesForeignConnections(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, _, err := TransportCredentials().ServerHandshake(a)
	if err == nil || !strings.Contains(err.Error(), "not accepted by peercred.Listen") {
		t.Errorf("ServerHandshake(pipe) error = %v, want refusal", err)
	}
}

func TestTransportCredentials_ClientHandshakeIsUnsupported(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, _, err := TransportCredentials().ClientHandshake(context.Background(), "x", a); err == nil {
		t.Error("ClientHandshake succeeded, want an error")
	}
}

func TestTransportCredentials_Info(t *testing.T) {
	creds := TransportCredentials()
	if got := creds.Info().SecurityProtocol; got != AuthType {
		t.Errorf("SecurityProtocol = %q, want %q", got, AuthType)
	}
	if got := creds.Clone().Info().SecurityProtocol; got != AuthType {
		t.Errorf("Clone().SecurityProtocol = %q, want %q", got, AuthType)
	}
	if got := (AuthInfo{}).AuthType(); got != "peercred" {
		t.Errorf("AuthType = %q, want peercred", got)
	}
}

func TestFromContext_WithoutPeerFindsNothing(t *testing.T) {
	if p, ok := FromContext(context.Background()); ok || p != nil {
		t.Errorf("FromContext(background) = %v, %v; want nil, false", p, ok)
	}
}
