// Command agent-task is an example "AI agent" doing one task with nhid:
//
//  1. it fetches its X.509-SVID from nhid-agent (SPIFFE Workload API) and
//     shows what it was issued for (purpose, owner);
//  2. it asks the agent's Grant API for a just-in-time grant for the task
//     (scopes, resource, action, reason, TTL) and waits, if policy says
//     so, for people to approve it (`nhidctl approval approve ID`); the
//     agent keeps the wait going across server restarts;
//  3. it presents the grant's Transaction Token in a Txn-Token header to a
//     resource server over mTLS with its X.509-SVID, and prints the answer;
//  4. it releases the grant, ending it before its TTL.
//
// It finds the agent through SPIFFE_ENDPOINT_SOCKET. The token is a bearer
// credential: it is never printed (--write-token saves it to a 0600 file).
//
//	agent-task --scope deploy:staging --resource app/web --action deploy \
//	    --reason "ship 1.4.2" --ttl 10m --url https://deploy.internal:9443/deploy
//
// Exit status: 0 when granted and every call succeeded, 3 when denied, 4
// when the resource server refused a call, 2 for bad flags, 1 otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitDenied  = 3
	exitRefused = 4
)

// options are the task's flags.
type options struct {
	scopes       []string
	resource     string
	action       string
	reason       string
	ttl          time.Duration
	details      string
	spiffeID     string
	url          string
	serverID     string
	repeat       int
	step         bool
	keep         bool
	writeToken   string
	output       string
	approvalWait time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent-task:", err)
		os.Exit(exitUsage)
	}
	out := newPrinter(os.Stdout, os.Stderr, opts.output == "json")
	os.Exit(run(ctx, opts, out))
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("agent-task", flag.ContinueOnError)
	fs.Func("scope", "OAuth scope the task needs (repeatable)", func(s string) error { o.scopes = append(o.scopes, s); return nil })
	fs.StringVar(&o.resource, "resource", "", "resource the task acts on, e.g. app/web")
	fs.StringVar(&o.action, "action", "", "action the task performs, e.g. deploy")
	fs.StringVar(&o.reason, "reason", "", "why the task needs the grant, for people")
	fs.DurationVar(&o.ttl, "ttl", 5*time.Minute, "expected duration of the task (whole seconds)")
	fs.StringVar(&o.details, "details", "", "RFC 9396 authorization_details, a JSON array")
	fs.StringVar(&o.spiffeID, "spiffe-id", "", "which of this process's identities asks, when it holds several")
	fs.StringVar(&o.url, "url", "", "resource server URL to call with the token (https)")
	fs.StringVar(&o.serverID, "server-id", "", "SPIFFE ID the resource server must present (default: any in the trust domain)")
	fs.IntVar(&o.repeat, "repeat", 1, "how many times to call --url")
	fs.BoolVar(&o.step, "step", false, "wait for a line on stdin before each call after the first")
	fs.BoolVar(&o.keep, "keep", false, "do not release the grant at the end")
	fs.StringVar(&o.writeToken, "write-token", "", "save the Txn-Token to this file (mode 0600)")
	fs.StringVar(&o.output, "o", "text", "output: text, or json (one object per line)")
	fs.DurationVar(&o.approvalWait, "approval-timeout", 30*time.Minute, "how long to wait for a human approval")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	case o.output != "text" && o.output != "json":
		return o, fmt.Errorf("-o: %q is not text or json", o.output)
	case o.repeat < 1:
		return o, errors.New("--repeat: must be at least 1")
	case o.ttl%time.Second != 0 || o.ttl/time.Second > math.MaxInt32 || o.ttl/time.Second < math.MinInt32:
		// Whether the TTL is acceptable is the agent's and the server's
		// call; only what cannot be sent is refused here.
		return o, fmt.Errorf("--ttl: %s is not a whole number of seconds that fits the request", o.ttl)
	case o.approvalWait <= 0:
		return o, errors.New("--approval-timeout: must be positive")
	}
	return o, nil
}

// run does the task and returns the exit status.
func run(ctx context.Context, o options, out *printer) int {
	addr := os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	if addr == "" {
		out.fail("", errors.New("SPIFFE_ENDPOINT_SOCKET is not set: point it at nhid-agent, e.g. unix:///run/nhid/agent.sock"))
		return exitFailed
	}
	id, err := fetchIdentity(ctx, addr, o.spiffeID)
	if err != nil {
		out.fail("fetch SVID", err)
		return exitFailed
	}
	defer id.Close()
	out.identity(id)

	g, err := newGrantClient(addr)
	if err != nil {
		out.fail("connect to the Grant API", err)
		return exitFailed
	}
	defer g.Close()
	reqCtx, cancel := context.WithTimeout(ctx, o.approvalWait)
	defer cancel()
	grant, err := g.request(reqCtx, o, out)
	if err != nil {
		out.fail("request grant", err)
		return exitFailed
	}
	if grant == nil {
		return exitDenied
	}
	status := exitOK
	if o.writeToken != "" {
		if err := os.WriteFile(o.writeToken, []byte(grant.GetToken()), 0o600); err != nil {
			out.fail("write token", err)
			status = exitFailed
		}
	}
	if status == exitOK && o.url != "" {
		status = callResource(ctx, o, id, grant.GetToken(), out)
	}
	if !o.keep {
		if err := g.release(ctx, grant.GetGrantId()); err != nil {
			out.fail("release grant", err)
			return exitFailed
		}
		out.released(grant.GetGrantId())
	}
	return status
}
