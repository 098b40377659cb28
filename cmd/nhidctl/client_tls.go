package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Environment variables of the mTLS admin connection's flags.
const (
	envServerAddress = "NHID_SERVER_ADDRESS"
	envServerID      = "NHID_SERVER_ID"
)

// serverPath is nhid-server's SPIFFE ID path in its trust domain.
const serverPath = "/nhid/server"

// svidTimeout bounds fetching nhidctl's own X.509-SVID from the agent.
const svidTimeout = 15 * time.Second

// tlsHint says how to point nhidctl at another server over mTLS.
const tlsHint = "check --server/" + envServerAddress + " and that nhid-server runs with --admin-address"

// serverAddress is --server if given, else $NHID_SERVER_ADDRESS; "" means
// the admin socket.
func (g *globals) serverAddress(cmd *cobra.Command) string {
	if cmd.Root().PersistentFlags().Changed("server") {
		return g.server
	}
	return os.Getenv(envServerAddress)
}

// serverIDFlag is --server-id if given, else $NHID_SERVER_ID.
func (g *globals) serverIDFlag(cmd *cobra.Command) string {
	if cmd.Root().PersistentFlags().Changed("server-id") {
		return g.serverID
	}
	return os.Getenv(envServerID)
}

// dialTLS connects to the admin API's mTLS listener at addr, presenting
// this process's X.509-SVID from the Workload API (--workload-socket,
// else $SPIFFE_ENDPOINT_SOCKET) and accepting only the server's SPIFFE ID
// (--server-id, default spiffe://<our trust domain>/nhid/server). The
// private key stays in the go-spiffe source, in this process.
func (g *globals) dialTLS(cmd *cobra.Command, addr string) (*admin, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usagef("--server %q: %v", addr, err)
	}
	var serverID spiffeid.ID
	if s := g.serverIDFlag(cmd); s != "" {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return nil, usagef("--server-id %q: %v", s, err)
		}
		serverID = id
	}
	wl, err := workloadAddr(g.workloadSocket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), svidTimeout)
	defer cancel()
	// One fetch first: it fails at once with the agent's reason (no
	// identity for this process), where the source would keep retrying.
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(wl))
	if err != nil {
		return nil, fmt.Errorf("the admin API over mTLS needs an X.509-SVID for nhidctl (an entry marked admin that selects this process): %w", explainWorkload(wl, err))
	}
	if serverID.IsZero() {
		serverID = spiffeid.RequireFromPath(svid.ID.TrustDomain(), serverPath)
	}
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(wl)))
	if err != nil {
		return nil, fmt.Errorf("watch nhidctl's X.509-SVID at %s: %w", wl, explainWorkload(wl, err))
	}
	tlsCfg := tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(serverID))
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)))
	if err != nil {
		_ = source.Close()
		return nil, fmt.Errorf("connect to nhid-server at %s: %w", addr, err)
	}
	return &admin{target: addr, hint: tlsHint, conn: conn, close: func() { _ = source.Close() }}, nil
}
