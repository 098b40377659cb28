package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// Defaults and environment variables of the global flags.
const (
	defaultAdminSocket = "/run/nhid/server.sock"
	envAdminSocket     = "NHID_ADMIN_SOCKET"
)

// annotationOutputs lists, comma-separated, the -o values a command takes
// when they differ from table and json.
const annotationOutputs = "nhidctl/outputs"

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatPEM   = "pem"
)

// globals holds the flags every command shares.
type globals struct {
	socket string
	output string
	// server, serverID and workloadSocket select the admin API over
	// mutual TLS instead of the socket (client_tls.go).
	server         string
	serverID       string
	adminID        string
	workloadSocket string
}

// usageError marks a mistake in how nhidctl was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// execute runs nhidctl with args and returns the process exit code: 0 on
// success, 2 for usage mistakes, 1 for everything else.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return executeCmd(ctx, newRootCmd(stdout, stderr), args, stderr)
}

// executeCmd runs root with args, printing any error to stderr.
func executeCmd(ctx context.Context, root *cobra.Command, args []string, stderr io.Writer) int {
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "nhidctl: %v\n", err)
	// cobra reports an unknown subcommand with an untyped error.
	if errors.As(err, new(usageError)) || strings.HasPrefix(err.Error(), "unknown command ") {
		fmt.Fprintln(stderr, "run 'nhidctl --help' for usage")
		return 2
	}
	return 1
}

// newRootCmd builds the whole command tree writing to stdout and stderr.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "nhidctl",
		Short: "Operate nhid: entries, nodes, join tokens, bundle; fetch SVIDs for debugging",
		Long: `nhidctl talks to nhid-server over its admin socket (--socket, or
$NHID_ADMIN_SOCKET, default ` + defaultAdminSocket + `), or from another host over
mutual TLS (--server HOST:PORT, or $NHID_SERVER_ADDRESS) with its own X.509-SVID
from the local agent, whose entry must be marked admin; for "svid" commands
it talks to nhid-agent's Workload API as a workload would.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return g.check(cmd) },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", defaultAdminSocket, "admin socket of nhid-server (env "+envAdminSocket+")")
	pf.StringVarP(&g.output, "output", "o", formatTable, "output format: table or json")
	pf.StringVar(&g.server, "server", "", "nhid-server's admin API over mutual TLS, HOST:PORT, instead of the socket (env "+envServerAddress+")")
	pf.StringVar(&g.serverID, "server-id", "", "with --server: the server's SPIFFE ID (env "+envServerID+"; default spiffe://<trust domain>"+serverPath+")")
	pf.StringVar(&g.adminID, "admin-id", "", "with --server: which of nhidctl's SVIDs to present when the agent gives it several (env "+envAdminID+"; default the first)")
	pf.StringVar(&g.workloadSocket, "workload-socket", "", "with --server: the Workload API nhidctl gets its own X.509-SVID from (default $SPIFFE_ENDPOINT_SOCKET, else "+defaultWorkloadSocket+")")
	root.AddCommand(
		newEntryCmd(g),
		newNodeCmd(g),
		newTokenCmd(g),
		newBundleCmd(g),
		newHealthcheckCmd(g),
		newSVIDCmd(g),
		newGrantCmd(g),
		newApprovalCmd(g),
		newPolicyCmd(g),
		newAuditCmd(g),
		newReputationCmd(g),
		newFederationCmd(g),
	)
	return root
}

// check validates -o for the command being run.
func (g *globals) check(cmd *cobra.Command) error {
	allowed := []string{formatTable, formatJSON}
	if a, ok := cmd.Annotations[annotationOutputs]; ok {
		allowed = strings.Split(a, ",")
	}
	out := cmd.Flags().Lookup("output")
	if out != nil && !slices.Contains(allowed, out.Value.String()) {
		return usagef("-o/--output %q is not one of %s", out.Value.String(), strings.Join(allowed, ", "))
	}
	return nil
}

// exactArgs is cobra.ExactArgs naming what the arguments are, as a usage
// error.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != len(names) {
			if len(names) == 0 {
				return usagef("unexpected argument %q", args[0])
			}
			return usagef("expected %s, got %d argument(s)", strings.Join(names, " "), len(args))
		}
		return nil
	}
}
