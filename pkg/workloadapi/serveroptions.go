package workloadapi

import "google.golang.org/grpc"

// http2DefaultWindow is HTTP/2's initial flow-control window (RFC 9113).
const http2DefaultWindow = 65535

// ServerOptions returns the gRPC server options the Workload Endpoint
// should be served with, besides its credentials and interceptors.
//
// They fix the server's receive windows at HTTP/2's defaults. With gRPC's
// dynamic windows, the server answers the first request data on every new
// connection with a window update and a BDP ping, which the client must
// read and acknowledge while it waits for its first response: frames,
// system calls and wake-ups on both sides at every workload's start.
// Dynamic windows help a client stream megabytes to the server; Workload
// API requests are a few bytes (a JWT-SVID to validate, at most a few
// KiB). What the server sends is paced by the client's window, not these.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.StaticStreamWindowSize(http2DefaultWindow),
		grpc.StaticConnWindowSize(http2DefaultWindow),
	}
}
