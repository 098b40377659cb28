// Command nhid-agent runs nhid's node agent: it attests the node to
// nhid-server and serves the SPIFFE Workload API to local workloads.
//
//	nhid-agent run --server HOST:PORT --trust-domain TD
//	               [--trust-bundle FILE | --insecure-bootstrap]
//	               [--join-token T | --join-token-file F | $NHID_JOIN_TOKEN] ...
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
