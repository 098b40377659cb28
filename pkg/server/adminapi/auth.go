package adminapi

import (
	"context"
	"os"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/peercred"
)

// AuthorizePeer returns interceptors for the admin socket that let a call
// through only if the kernel says the caller is root, the server's own
// user, one of allowedUIDs, or has one of allowedGIDs as its primary group.
// Anyone else, or a connection without peer credentials, gets
// PermissionDenied. The socket must be served with peercred.Listen and
// peercred.TransportCredentials.
func AuthorizePeer(allowedUIDs, allowedGIDs []uint32) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	a := newAuthorizer(uint32(os.Getuid()), allowedUIDs, allowedGIDs)
	return a.unary, a.stream
}

// authorizer holds the access rule; ownUID is a field so tests can stand
// in for a server running as another user.
type authorizer struct {
	ownUID uint32
	uids   []uint32
	gids   []uint32
}

func newAuthorizer(ownUID uint32, uids, gids []uint32) *authorizer {
	return &authorizer{ownUID: ownUID, uids: slices.Clone(uids), gids: slices.Clone(gids)}
}

// allowed is the access rule on the kernel's uid and primary gid.
func (a *authorizer) allowed(uid, gid uint32) bool {
	return uid == 0 || uid == a.ownUID || slices.Contains(a.uids, uid) || slices.Contains(a.gids, gid)
}

func (a *authorizer) check(ctx context.Context) error {
	p, ok := peercred.FromContext(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, "admin api: caller has no kernel credentials; connect over the admin Unix socket")
	}
	if !a.allowed(p.UID(), p.GID()) {
		return status.Errorf(codes.PermissionDenied,
			"admin api: uid %d is not allowed; run as root or the server's user, or add the uid or its group to the server's admin allow-list", p.UID())
	}
	return nil
}

func (a *authorizer) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := a.check(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}
