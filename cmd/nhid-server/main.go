// Command nhid-server runs nhid's server: the CA, the agent API that nodes
// attest and sync through, and the admin API nhidctl talks to.
//
//	nhid-server run [--config FILE] [--data-dir DIR] [--trust-domain TD]
//	                [--bind HOST:PORT] [--admin-socket PATH]
//	                [--health-address HOST:PORT] [--log-level L]
//	                [--log-format text|json]
//	nhid-server validate --config FILE
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
