// Command nhidctl is nhid's operator CLI: it manages entries, nodes, join
// tokens and the bundle over nhid-server's admin socket, and, as a workload,
// fetches SVIDs from nhid-agent's Workload API for debugging.
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
