// Command whoami is the quick start's example workload: a plain go-spiffe
// client. It prints the SPIFFE ID it was given, the purpose and owner nhid
// wrote into the SVID, the SVID's expiry and serial, then a line for every
// rotation, until it is interrupted. It finds the agent through
// SPIFFE_ENDPOINT_SOCKET.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/svid"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After Ctrl-C the client reports a cancelled call: that is not an error.
	if err := run(ctx, os.Stdout); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "whoami:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	if os.Getenv("SPIFFE_ENDPOINT_SOCKET") == "" {
		return errors.New("SPIFFE_ENDPOINT_SOCKET is not set: point it at the agent, e.g. unix:///run/nhid/agent.sock")
	}
	client, err := workloadapi.New(ctx)
	if err != nil {
		return fmt.Errorf("connect to the Workload API: %w", err)
	}
	defer client.Close()
	return client.WatchX509Context(ctx, &printer{out: out})
}

// printer reports each X.509 context the agent pushes.
type printer struct {
	out     io.Writer
	updates int
}

func (p *printer) OnX509ContextUpdate(c *workloadapi.X509Context) {
	p.updates++
	for _, s := range c.SVIDs {
		leaf := s.Certificates[0]
		verb := "I am"
		if p.updates > 1 {
			verb = "rotated:"
		}
		// An SVID from another issuer has no purpose attribute.
		purpose, _, err := svid.PurposeFromCertificate(leaf)
		if err != nil {
			fmt.Fprintln(p.out, "unreadable purpose attribute:", err)
		}
		fmt.Fprintf(p.out, "%s %s  purpose=%q  owner=%q  hint=%q  serial=%s  expires=%s (in %s)\n",
			verb, s.ID, purpose.Purpose, purpose.Owner, s.Hint, leaf.SerialNumber.Text(16),
			leaf.NotAfter.UTC().Format(time.RFC3339), time.Until(leaf.NotAfter).Round(time.Second))
	}
}

func (p *printer) OnX509ContextWatchError(err error) {
	if status.Code(err) != codes.Canceled {
		fmt.Fprintln(p.out, "watch error (the client retries):", err)
	}
}
