package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// callTimeout bounds one admin RPC, so a wedged server does not hang a
// script forever.
const callTimeout = 30 * time.Second

// maxRecvMsgSize lets a page of large entries through: the default 4 MiB
// would fail on a few hundred entries near their size limits.
const maxRecvMsgSize = 128 << 20

// admin is a connection to nhid-server's admin API, over its socket or
// over mutual TLS.
type admin struct {
	// target names where the API is, for messages: the socket path or the
	// --server address.
	target string
	// hint says how to point nhidctl elsewhere.
	hint  string
	conn  *grpc.ClientConn
	close func() // releases what the connection holds besides conn
	// choice, over mTLS when nhidctl holds several SVIDs, says which it
	// presented and how to pick another, for a refusal.
	choice string
}

// adminSocket is --socket if given, else $NHID_ADMIN_SOCKET, else the
// default path.
func (g *globals) adminSocket(cmd *cobra.Command) string {
	if cmd.Root().PersistentFlags().Changed("socket") {
		return g.socket
	}
	if env := os.Getenv(envAdminSocket); env != "" {
		return env
	}
	return g.socket
}

// dial connects to the admin API: over mutual TLS when --server (or
// $NHID_SERVER_ADDRESS) is set, else over the admin socket. The socket
// connection is made lazily by gRPC, so a missing socket is reported
// here, where the message can say what to do.
func (g *globals) dial(cmd *cobra.Command) (*admin, error) {
	if err := g.checkDoor(cmd); err != nil {
		return nil, err
	}
	if addr := g.serverAddress(cmd); addr != "" {
		return g.dialTLS(cmd, addr)
	}
	return dialAdmin(g.adminSocket(cmd))
}

// dialAdmin connects to the admin socket at path.
func dialAdmin(path string) (*admin, error) {
	if path == "" {
		return nil, usagef("--socket is empty")
	}
	if _, err := os.Stat(path); err != nil {
		return nil, unreachable(path)
	}
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)))
	if err != nil {
		return nil, fmt.Errorf("connect to nhid-server at %s: %w", path, err)
	}
	return &admin{target: path, hint: socketHint, conn: conn}, nil
}

func (a *admin) Close() {
	_ = a.conn.Close()
	if a.close != nil {
		a.close()
	}
}

// socketHint says how to point nhidctl at another admin socket.
const socketHint = "set --socket or " + envAdminSocket

func unreachable(path string) error {
	return unreachableAt(path, socketHint)
}

func unreachableAt(target, hint string) error {
	return fmt.Errorf("cannot reach nhid-server at %s: is it running? %s", target, hint)
}

// call runs one RPC with a timeout and turns its error into one an
// operator can act on.
func call[Req, Resp any](cmd *cobra.Command, a *admin, fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
	defer cancel()
	resp, err := fn(ctx, req)
	if err != nil {
		return resp, a.explain(err)
	}
	return resp, nil
}

// explain strips gRPC's framing from an admin API error: the server's
// messages already say what was wrong.
func (a *admin) explain(err error) error {
	st, ok := grpcStatus(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		// With the connection up, the server itself answered Unavailable
		// (its store has no quorum, or it is shutting down): say why.
		if a.conn.GetState() == connectivity.Ready {
			return fmt.Errorf("nhid-server is unavailable: %s", st.Message())
		}
		if a.close != nil {
			// Over TLS the reason (a refused certificate, the wrong
			// server identity) is worth showing.
			return fmt.Errorf("cannot reach nhid-server at %s over mutual TLS: %s; %s", a.target, st.Message(), a.hint)
		}
		return unreachableAt(a.target, a.hint)
	case codes.DeadlineExceeded:
		return fmt.Errorf("nhid-server at %s did not answer within %v", a.target, callTimeout)
	case codes.Canceled:
		return errors.New("cancelled")
	case codes.PermissionDenied:
		if a.choice != "" {
			return fmt.Errorf("%s; %s", st.Message(), a.choice)
		}
	}
	return errors.New(st.Message())
}

// grpcStatus finds the status in err without the text wrappers added, so
// that only the server's own message is shown.
func grpcStatus(err error) (*status.Status, bool) {
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		if st := gs.GRPCStatus(); st != nil {
			return st, true
		}
	}
	return nil, false
}
