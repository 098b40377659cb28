package agentapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// lastSeenInterval bounds how often an authenticated call writes the
// node's last_seen_at: every write is a store revision and an event every
// Sync stream sees.
const lastSeenInterval = time.Minute

var (
	servicePrefix      = "/" + agentv1.AgentService_ServiceDesc.ServiceName + "/"
	grantServicePrefix = "/" + agentv1.AgentGrantService_ServiceDesc.ServiceName + "/"
)

// Messages of the PermissionDenied answers agents branch on.
const (
	msgEvicted = "node evicted: attest again"
	msgBanned  = "node banned"
	// msgAttestedOnce refuses replayable evidence for a node that holds
	// an identity already.
	msgAttestedOnce = "node already attested with this evidence, which can be replayed; evict the node (nhidctl node evict) to let it attest again"
	msgSuperseded   = "agent SVID superseded"
	msgUnknown      = "node unknown: attest again"
	// msgUntrusted prefixes the refusals of an UNTRUSTED node's renewals
	// and mints; it deliberately does not ask the agent to attest again.
	msgUntrusted = "node untrusted"
)

// caller is the authenticated agent of a request.
type caller struct {
	id     spiffeid.ID
	serial string
	node   *typesv1.Node
}

type callerKey struct{}

func callerFrom(ctx context.Context) (*caller, error) {
	c, ok := ctx.Value(callerKey{}).(*caller)
	if !ok {
		// Only reachable when the interceptors were not installed.
		return nil, status.Error(codes.Unauthenticated, "agent SVID required")
	}
	return c, nil
}

// AuthInterceptors authenticate agent API calls: every AgentService method
// but Attest, and every AgentGrantService method, requires the agent's
// X.509-SVID as TLS client certificate. The
// TLS layer (pkg/server/servertls) has verified the chain at the handshake;
// the interceptors verify it again against the bundle as it is now, because
// a connection outlives bundle changes, then require an agent ID of the
// trust domain whose node is ACTIVE and whose current or previous SVID
// serial the certificate carries. The node goes into the request context.
// Methods of other services (such as health) pass through untouched.
func (s *Service) AuthInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !needsAuth(info.FullMethod) {
			return handler(ctx, req)
		}
		ctx, err := s.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !needsAuth(info.FullMethod) {
			return handler(srv, ss)
		}
		ctx, err := s.authenticate(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	}
	return unary, stream
}

func needsAuth(method string) bool {
	if strings.HasPrefix(method, grantServicePrefix) {
		return true
	}
	return strings.HasPrefix(method, servicePrefix) && method != agentv1.AgentService_Attest_FullMethodName
}

func (s *Service) authenticate(ctx context.Context) (context.Context, error) {
	id, serial, err := s.peerSVID(ctx)
	if err != nil {
		return nil, err
	}
	node, err := s.store.GetNode(ctx, id.String())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Error(codes.PermissionDenied, msgUnknown)
	case err != nil:
		return nil, s.internal(ctx, "load node", err)
	}
	if err := checkNode(node, serial); err != nil {
		return nil, err
	}
	if node, err = s.touch(ctx, node, serial); err != nil {
		return nil, err
	}
	log := telemetry.Logger(ctx, s.log).With(telemetry.NodeID, id.String())
	ctx = telemetry.ContextWithLogger(ctx, log)
	return context.WithValue(ctx, callerKey{}, &caller{id: id, serial: serial, node: node}), nil
}

// peerSVID returns the SPIFFE ID and hex serial of the caller's verified
// client certificate.
func (s *Service) peerSVID(ctx context.Context) (spiffeid.ID, string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, "", status.Error(codes.Unauthenticated, "agent SVID required")
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, "", status.Error(codes.Unauthenticated,
			"agent SVID required: present the agent X.509-SVID as TLS client certificate")
	}
	certs := tlsInfo.State.PeerCertificates
	id, err := s.bundles.VerifyX509SVID(ctx, certs)
	if err != nil {
		return spiffeid.ID{}, "", status.Error(codes.Unauthenticated, "agent SVID not trusted: "+err.Error())
	}
	if id.TrustDomain() != s.td || !agentid.IsAgent(id) {
		return spiffeid.ID{}, "", status.Errorf(codes.PermissionDenied,
			"%s is not an agent ID of trust domain %s", id, s.td.Name())
	}
	return id, serialHex(certs[0]), nil
}

// checkNode decides whether node, presenting an SVID with serial, is served.
// An UNTRUSTED node is: it keeps Sync and Reattest, so that it can recover,
// while checkTrusted refuses its renewals and mints.
func checkNode(node *typesv1.Node, serial string) error {
	switch node.GetStatus() {
	case typesv1.NodeStatus_NODE_STATUS_ACTIVE, typesv1.NodeStatus_NODE_STATUS_UNTRUSTED:
	case typesv1.NodeStatus_NODE_STATUS_BANNED:
		return status.Error(codes.PermissionDenied, msgBanned)
	default:
		return status.Error(codes.PermissionDenied, msgEvicted)
	}
	if serial == "" || (serial != node.GetSvidSerial() && serial != node.GetPreviousSvidSerial()) {
		return status.Error(codes.PermissionDenied, msgSuperseded)
	}
	return nil
}

// touch records that node was seen, at most once a lastSeenInterval, and
// retires the previous SVID once the current one is used: from then on
// only the current one authenticates.
func (s *Service) touch(ctx context.Context, node *typesv1.Node, serial string) (*typesv1.Node, error) {
	now := s.clock.Now()
	retire := serial == node.GetSvidSerial() && node.GetPreviousSvidSerial() != ""
	if !retire && now.Unix()-node.GetLastSeenAt() < int64(lastSeenInterval/time.Second) {
		return node, nil
	}
	updated, err := s.store.UpdateNode(ctx, node.GetSpiffeId(), func(n *typesv1.Node) error {
		if err := checkNode(n, serial); err != nil {
			return err
		}
		if serial == n.GetSvidSerial() {
			n.PreviousSvidSerial = ""
		}
		n.LastSeenAt = now.Unix()
		return nil
	})
	switch {
	case status.Code(err) == codes.PermissionDenied:
		return nil, err
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Error(codes.PermissionDenied, msgUnknown)
	case err != nil:
		return nil, s.internal(ctx, "record node last seen", err)
	}
	return updated, nil
}

// contextStream hands an enriched context to a stream handler.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// internal logs an unexpected failure with its details and returns the
// status the agent sees: the operation that failed, never internals.
// Cancellation is reported as such, not as a server fault.
func (s *Service) internal(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	if errors.Is(err, store.ErrUnavailable) {
		telemetry.Logger(ctx, s.log).Warn("agent API call failed: store unavailable", "op", op, telemetry.Error, err.Error())
		return status.Error(codes.Unavailable, fmt.Sprintf("%s failed: the store is unavailable; retry later", op))
	}
	telemetry.Logger(ctx, s.log).Error("agent API call failed", "op", op, telemetry.Error, err.Error())
	return status.Error(codes.Internal, fmt.Sprintf("internal error: %s failed", op))
}
