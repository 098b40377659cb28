package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// validate checks a JWT-SVID through the Workload API, as a relying party
// does with a token another workload sent it.
func validate(ctx context.Context, audience, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	svid, err := workloadapi.ValidateJWTSVID(ctx, token, audience)
	if err != nil {
		return err
	}
	return emit(result{Subject: svid.ID.String(), Time: time.Now()})
}

// serve accepts mTLS connections from any SPIFFE ID its bundles verify and
// writes each client's SPIFFE ID back, until ctx ends. It prints a line
// once listening.
func serve(ctx context.Context, addr string) error {
	lis, err := spiffetls.ListenWithMode(ctx, "tcp", addr, spiffetls.MTLSServerWithSourceOptions(tlsconfig.AuthorizeAny()))
	if err != nil {
		return err
	}
	defer lis.Close()
	go func() {
		<-ctx.Done()
		_ = lis.Close()
	}()
	if err := emit(result{Peer: "listening", Time: time.Now()}); err != nil {
		return err
	}
	for {
		conn, err := lis.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go answer(conn)
	}
}

func answer(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	id, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		return
	}
	_, _ = fmt.Fprintln(conn, id.String())
	_ = emit(result{Peer: id.String(), Time: time.Now()})
}

// dial connects over mTLS to addr, accepting only serverID, and prints
// the server's ID and what the server saw of us.
func dial(ctx context.Context, addr, serverID string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	want, err := spiffeid.FromString(serverID)
	if err != nil {
		return err
	}
	conn, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithSourceOptions(tlsconfig.AuthorizeID(want)))
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read the server's answer: %w", err)
	}
	if line == "" {
		return errors.New("the server answered nothing")
	}
	return emit(result{Peer: want.String(), Subject: line[:len(line)-1], Time: time.Now()})
}
