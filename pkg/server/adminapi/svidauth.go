package adminapi

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// SVIDVerifier checks a peer's certificate chain (leaf first) is an
// X.509-SVID of the trust domain, valid now, and returns its SPIFFE ID
// (servertls.Bundles does).
type SVIDVerifier interface {
	VerifyX509SVID(ctx context.Context, certs []*x509.Certificate) (spiffeid.ID, error)
}

// AdminEntryLister finds the registration entries of a SPIFFE ID.
type AdminEntryLister interface {
	ListEntries(ctx context.Context, req store.ListEntriesRequest) ([]*typesv1.Entry, string, error)
}

// SVIDAuthConfig configures the admin API's mTLS listener authorisation.
type SVIDAuthConfig struct {
	// Verifier checks the client's X.509-SVID at every call. Required.
	Verifier SVIDVerifier
	// Entries finds the caller's entries. Required.
	Entries AdminEntryLister
	// AllowedIDs may call the admin API whatever their entries say: the
	// bootstrap operators, before any admin entry exists.
	AllowedIDs []spiffeid.ID
	// Roles narrow what matching identities may call (roles.go); an
	// identity no role matches may call every method.
	Roles []Role
	// Clock decides whether an entry has expired; default the wall clock.
	Clock clock.Clock
}

// adminEntryPage bounds one read of a SPIFFE ID's entries; an ID rarely
// has more than a handful.
const adminEntryPage = 100

// AuthorizeSVID returns interceptors for the admin API's mTLS listener
// that let a call through only if the client's certificate is an
// X.509-SVID of the trust domain (verified again at every call, so an
// SVID that expired on a long-lived connection stops working) and its
// SPIFFE ID is one of cfg.AllowedIDs or has a registration entry marked
// admin that has not expired, and, if a role matches it, the role permits
// the method. The entry is read at every call: clearing
// the admin flag or deleting the entry takes effect at once. The caller's
// SPIFFE ID names it in audit records and approvals.
func AuthorizeSVID(cfg SVIDAuthConfig) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	a := &svidAuthorizer{cfg: cfg}
	a.cfg.Clock = clock.OrReal(cfg.Clock)
	a.cfg.AllowedIDs = slices.Clone(cfg.AllowedIDs)
	a.cfg.Roles = slices.Clone(cfg.Roles)
	return a.unary, a.stream
}

type svidAuthorizer struct {
	cfg SVIDAuthConfig
}

// svidCallerKey carries the authorised caller's SPIFFE ID in the context.
type svidCallerKey struct{}

// svidCaller returns the SPIFFE ID AuthorizeSVID authorised, if the call
// came over the mTLS listener.
func svidCaller(ctx context.Context) (spiffeid.ID, bool) {
	id, ok := ctx.Value(svidCallerKey{}).(spiffeid.ID)
	return id, ok
}

func (a *svidAuthorizer) check(ctx context.Context, method string) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "admin api: no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, status.Error(codes.Unauthenticated, "admin api: connect with an X.509-SVID of the trust domain as the client certificate")
	}
	id, err := a.cfg.Verifier.VerifyX509SVID(ctx, info.State.PeerCertificates)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "admin api: client certificate: %v; fetch a current X.509-SVID and reconnect", err)
	}
	allowed, err := a.allowed(ctx, id)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "admin api: cannot check %s's entries: %v; retry", id, err)
	}
	if !allowed {
		return nil, status.Errorf(codes.PermissionDenied,
			"admin api: %s is not an admin identity; register its entry with --admin, or add it to server.admin.allowed_spiffe_ids", id)
	}
	if role, ok := roleOf(a.cfg.Roles, id); ok {
		if need := methodPermission(method); !role.permits(need) {
			return nil, status.Errorf(codes.PermissionDenied,
				"admin api: %s has role %s (%s); %s needs %s", id, role.Name, joinPermissions(role.Permissions), method, need)
		}
	}
	return context.WithValue(ctx, svidCallerKey{}, id), nil
}

// allowed is the access rule on a verified SPIFFE ID.
func (a *svidAuthorizer) allowed(ctx context.Context, id spiffeid.ID) (bool, error) {
	if slices.Contains(a.cfg.AllowedIDs, id) {
		return true, nil
	}
	now := a.cfg.Clock.Now()
	req := store.ListEntriesRequest{SpiffeID: id.String(), PageSize: adminEntryPage}
	for {
		entries, next, err := a.cfg.Entries.ListEntries(ctx, req)
		if err != nil {
			return false, err
		}
		if slices.ContainsFunc(entries, func(e *typesv1.Entry) bool { return e.GetAdmin() && !entryExpired(e, now) }) {
			return true, nil
		}
		if next == "" {
			return false, nil
		}
		req.PageToken = next
	}
}

func joinPermissions(ps []Permission) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

// entryExpired reports whether e's expires_at has passed at now.
func entryExpired(e *typesv1.Entry, now time.Time) bool {
	return e.GetExpiresAt() != 0 && now.Unix() >= e.GetExpiresAt()
}

func (a *svidAuthorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.check(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *svidAuthorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.check(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &callerStream{ServerStream: ss, ctx: ctx})
}

// callerStream is a stream whose context carries the authorised caller.
type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }
