package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nhid/nhid/attestors/all"
	"github.com/nhid/nhid/pkg/agent"
	"github.com/nhid/nhid/pkg/telemetry"
)

// usageError marks a mistake in how nhid-agent was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// execute runs nhid-agent with args and returns the exit code: 0 after a
// clean stop, 2 for usage mistakes, 1 for everything else.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	root := newRootCmd(stdout, stderr, getenv)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "nhid-agent: %v\n", err)
	if errors.As(err, new(usageError)) {
		fmt.Fprintln(stderr, "run 'nhid-agent run --help' for usage")
		return 2
	}
	return 1
}

func newRootCmd(stdout, stderr io.Writer, getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use:           "nhid-agent",
		Short:         "nhid's node agent: node attestation and the SPIFFE Workload API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(stderr, getenv), newValidateCmd(stdout, getenv))
	return root
}

// runOptions are the run command's flag values.
type runOptions struct {
	configPath string
	fl         settings
}

func newRunCmd(stderr io.Writer, getenv func(string) string) *cobra.Command {
	cmd, _ := newRunCommand(stderr, getenv)
	return cmd
}

// newRunCommand returns the run command and the values its flags fill.
func newRunCommand(stderr io.Writer, getenv func(string) string) (*cobra.Command, *runOptions) {
	o := &runOptions{fl: defaults()}
	fl := &o.fl
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent until SIGTERM or SIGINT",
		Long: `Run attests the node to nhid-server (or reuses the agent SVID kept in the
data dir), syncs the entries authorised for the node and serves their SVIDs
on the Workload API socket. Settings come from --config (YAML, "version: 1"
and an "agent:" section with the settings below in snake_case), and flags
win over the file. The join token is best given by --join-token-file or
$` + envJoinToken + `: a command line is visible to other local users.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := gather(o.configPath, *fl, cmd.Flags())
			if err != nil {
				return err
			}
			return run(cmd.Context(), s, stderr, getenv)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.configPath, "config", "", "YAML config file")
	f.StringVar(&fl.DataDir, "data-dir", fl.DataDir, "directory for the cache, the agent SVID and the bundle")
	f.StringVar(&fl.Server, "server", "", "nhid-server agent API address, HOST:PORT; several servers: HOST:PORT,HOST:PORT (a host may be a DNS name of several servers)")
	f.StringVar(&fl.TrustDomain, "trust-domain", fl.TrustDomain, "trust domain")
	f.StringVar(&fl.TrustBundle, "trust-bundle", "", "PEM file with the server's CA certificates, to verify it before the first attestation")
	f.BoolVar(&fl.InsecureBootstrap, "insecure-bootstrap", false, "trust the server reached by the very first attestation without verifying it")
	f.StringVar(&fl.NodeAttestor, "node-attestor", fl.NodeAttestor, "node attestor: "+joinTypes())
	f.StringVar(&fl.JoinToken, "join-token", "", "join token (prefer --join-token-file or $"+envJoinToken+")")
	f.StringVar(&fl.JoinTokenFile, "join-token-file", "", "file holding the join token")
	f.StringVar(&fl.Socket, "socket", fl.Socket, "Workload API socket path")
	f.StringVar(&fl.HealthAddress, "health-address", fl.HealthAddress, `address of /healthz, /readyz and /metrics; "" disables them`)
	f.StringVar(&fl.KeyType, "key-type", "", "workload key type: ec-p256 (default), ec-p384, rsa-2048")
	f.IntVar(&fl.MaxPreMintedSVIDs, "max-pre-minted-svids", 0, "most SVIDs minted ahead of demand (0: default 10000)")
	f.StringVar(&fl.LogLevel, "log-level", fl.LogLevel, "debug, info, warn or error")
	f.StringVar(&fl.LogFormat, "log-format", fl.LogFormat, "text or json")
	return cmd, o
}

func joinTypes() string { return strings.Join(all.NodeEvidenceTypes(), ", ") }

// gather merges defaults, the config file and the flags given.
func gather(configPath string, fl settings, flags *pflag.FlagSet) (settings, error) {
	s := defaults()
	if configPath != "" {
		var err error
		if s, err = loadFile(configPath, s); err != nil {
			return settings{}, err
		}
	}
	applyFlags(&s, fl, flags.Changed)
	return s, nil
}

// run builds the agent from checked settings and runs it.
func run(ctx context.Context, s settings, stderr io.Writer, getenv func(string) string) error {
	r, err := s.check(getenv)
	if err != nil {
		return usageError{fmt.Errorf("invalid settings:\n%w", err)}
	}
	log, err := telemetry.NewLogger(stderr, s.LogLevel, s.LogFormat)
	if err != nil {
		return usageError{fmt.Errorf("agent.log_level: %w", err)}
	}
	cfg, err := agentConfig(s, r, log)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// agentConfig builds the agent's Config, with the attestors the binary
// compiles in (pkg/agent does not import attestors/).
func agentConfig(s settings, r resolved, log *slog.Logger) (agent.Config, error) {
	workload, err := all.WorkloadAttestors(all.WorkloadConfig{Log: log, K8s: r.k8s, Container: r.container, Sigstore: r.sigstore})
	if err != nil {
		return agent.Config{}, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := agent.Config{
		TrustDomain:       r.td,
		DataDir:           s.DataDir,
		ServerAddress:     s.Server,
		TrustBundleFile:   s.TrustBundle,
		InsecureBootstrap: s.InsecureBootstrap,
		WorkloadAttestor:  all.Combine(log, workload...),
		SocketPath:        s.Socket,
		HealthAddress:     s.HealthAddress,
		KeyType:           s.KeyType,
		MaxPreMintedSVIDs: s.MaxPreMintedSVIDs,
		Log:               log,
		Metrics:           reg,
	}
	if r.joinToken != "" || s.NodeAttestor != "join_token" {
		ev, err := all.NodeEvidence(s.NodeAttestor, all.NodeEvidenceConfig{JoinToken: r.joinToken, K8sPSAT: r.psat, TPM: r.tpm, AWSIID: r.awsiid})
		if err != nil {
			return agent.Config{}, usageError{fmt.Errorf("agent.node_attestor: %w", err)}
		}
		cfg.NodeEvidence = ev
	}
	return cfg, nil
}
