package peercred

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// AuthType is what AuthInfo.AuthType returns.
const AuthType = "peercred"

// AuthInfo is the gRPC AuthInfo of a connection accepted by a listener from
// Listen: the process the kernel says is calling.
type AuthInfo struct {
	credentials.CommonAuthInfo
	// Process is the caller, pinned for the life of the connection.
	Process *Process
}

// AuthType returns "peercred".
func (AuthInfo) AuthType() string { return AuthType }

// TransportCredentials returns gRPC server credentials for a listener from
// Listen. They add no encryption (the socket never leaves the host); they
// attach the caller's *Process to every RPC, for FromContext. A connection
// from any other listener is refused. Client handshakes are not supported.
func TransportCredentials() credentials.TransportCredentials {
	return transportCreds{}
}

type transportCreds struct{}

func (transportCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peercred: client handshake is not supported; these are server credentials")
}

func (transportCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	proc, ok := ProcessOf(c)
	if !ok {
		return nil, nil, fmt.Errorf("peercred: connection from %v was not accepted by peercred.Listen", c.RemoteAddr())
	}
	// The bytes never leave the host's kernel, which is what the gRPC
	// security level expresses for per-RPC credentials that require it.
	info := AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		Process:        proc,
	}
	return c, info, nil
}

func (transportCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: AuthType}
}

func (transportCreds) Clone() credentials.TransportCredentials { return transportCreds{} }

// OverrideServerName is part of the gRPC interface; there is no server name.
func (transportCreds) OverrideServerName(string) error { return nil }

// FromContext returns the calling process in a gRPC handler served with
// TransportCredentials.
func FromContext(ctx context.Context) (*Process, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil, false
	}
	info, ok := p.AuthInfo.(AuthInfo)
	if !ok || info.Process == nil {
		return nil, false
	}
	return info.Process, true
}
