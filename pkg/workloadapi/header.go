package workloadapi

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The Workload Endpoint's SSRF guard: every request carries this metadata.
const (
	securityHeaderKey   = "workload.spiffe.io"
	securityHeaderValue = "true"
)

// errMissingHeader is what the SPIFFE Workload Endpoint specification
// prescribes for a request without the security header: InvalidArgument,
// which clients do not retry.
var errMissingHeader = status.Error(codes.InvalidArgument, "security header missing from request")

// SecurityHeaderInterceptors returns gRPC server interceptors that refuse,
// with InvalidArgument, every request that lacks the metadata
// "workload.spiffe.io: true". Any service served on the Workload Endpoint
// socket needs them: the header proves the request was not forged by a
// server-side request forgery, which could otherwise reach the socket.
func SecurityHeaderInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if !hasSecurityHeader(ctx) {
			return nil, errMissingHeader
		}
		return next(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
		if !hasSecurityHeader(ss.Context()) {
			return errMissingHeader
		}
		return next(srv, ss)
	}
	return unary, stream
}

// hasSecurityHeader requires exactly one value, and it must be "true" (case
// sensitive, as the specification says).
func hasSecurityHeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	vals := md.Get(securityHeaderKey)
	return len(vals) == 1 && vals[0] == securityHeaderValue
}
