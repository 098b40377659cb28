package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Environment variables of the mTLS admin connection's flags.
const (
	envServerAddress = "NHID_SERVER_ADDRESS"
	envServerID      = "NHID_SERVER_ID"
	envAdminID       = "NHID_ADMIN_ID"
)

// serverPath is nhid-server's SPIFFE ID path in its trust domain.
const serverPath = "/nhid/server"

// svidTimeout bounds fetching nhidctl's own X.509-SVID from the agent.
const svidTimeout = 15 * time.Second

// tlsHint says how to point nhidctl at another server over mTLS.
const tlsHint = "check --server/" + envServerAddress + " and that nhid-server runs with --admin-address"

// serverAddress is --server if given, else $NHID_SERVER_ADDRESS unless
// --socket was given; "" means the admin socket. A flag the user typed
// always wins over the environment.
func (g *globals) serverAddress(cmd *cobra.Command) string {
	flags := cmd.Root().PersistentFlags()
	switch {
	case flags.Changed("server"):
		return g.server
	case flags.Changed("socket"):
		return ""
	}
	return os.Getenv(envServerAddress)
}

// checkDoor refuses flags that pick both doors, and flags of the mTLS
// door without it: both would otherwise be ignored silently.
func (g *globals) checkDoor(cmd *cobra.Command) error {
	flags := cmd.Root().PersistentFlags()
	if flags.Changed("server") && flags.Changed("socket") {
		return usagef("--socket and --server pick different ways to the admin API; give one")
	}
	if g.serverAddress(cmd) != "" {
		return nil
	}
	for _, name := range []string{"server-id", "admin-id", "workload-socket"} {
		if flags.Changed(name) {
			return usagef("--%s applies to the admin API over mutual TLS; give --server HOST:PORT too", name)
		}
	}
	return nil
}

// fromFlagOrEnv is the named root flag's value if given, else env's.
func fromFlagOrEnv(cmd *cobra.Command, name, value, env string) string {
	if cmd.Root().PersistentFlags().Changed(name) {
		return value
	}
	return os.Getenv(env)
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
	var serverID, adminID spiffeid.ID
	for _, f := range []struct {
		name, value, env string
		id               *spiffeid.ID
	}{{"server-id", g.serverID, envServerID, &serverID}, {"admin-id", g.adminID, envAdminID, &adminID}} {
		if s := fromFlagOrEnv(cmd, f.name, f.value, f.env); s != "" {
			id, err := spiffeid.FromString(s)
			if err != nil {
				return nil, usagef("--%s %q: %v", f.name, s, err)
			}
			*f.id = id
		}
	}
	wl, err := workloadAddr(g.workloadSocket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), svidTimeout)
	defer cancel()
	// One fetch first: it fails at once with the agent's reason (no
	// identity for this process), where the source would keep retrying.
	svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(wl))
	if err != nil {
		return nil, fmt.Errorf("the admin API over mTLS needs an X.509-SVID for nhidctl (an entry marked admin that selects this process): %w", explainWorkload(wl, err))
	}
	held := make([]string, len(svids))
	for i, s := range svids {
		held[i] = s.ID.String()
	}
	chosen := svids[0]
	if !adminID.IsZero() {
		i := slices.IndexFunc(svids, func(s *x509svid.SVID) bool { return s.ID == adminID })
		if i < 0 {
			return nil, fmt.Errorf("--admin-id %s is not among nhidctl's SVIDs (%s); check the admin entry's selectors", adminID, strings.Join(held, ", "))
		}
		chosen = svids[i]
	}
	if serverID.IsZero() {
		serverID = spiffeid.RequireFromPath(chosen.ID.TrustDomain(), serverPath)
	}
	// The source presents the chosen identity through every rotation.
	pick := func(ss []*x509svid.SVID) *x509svid.SVID {
		for _, s := range ss {
			if s.ID == chosen.ID {
				return s
			}
		}
		return ss[0]
	}
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(wl)),
		workloadapi.WithDefaultX509SVIDPicker(pick))
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
	a := &admin{target: addr, hint: tlsHint, conn: conn, close: func() { _ = source.Close() }}
	if len(held) > 1 {
		a.choice = fmt.Sprintf("nhidctl presented %s of its SVIDs (%s): pick the admin one with --admin-id", chosen.ID, strings.Join(held, ", "))
	}
	return a, nil
}
