package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// usageError marks a mistake in how nhid-server was called or configured
// (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// execute runs nhid-server with args and returns the exit code: 0 after a
// clean stop, 2 for usage and configuration mistakes, 1 otherwise.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "nhid-server",
		Short:         "nhid's server: CA, agent API and admin API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(stderr), newValidateCmd(stdout))
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "nhid-server: %v\n", err)
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

// flagRelyingPartyAddress sets relying_party.address, the one section
// setting with a flag.
const flagRelyingPartyAddress = "relying-party-address"

// flagAdminAddress sets admin.address: the admin API over mutual TLS.
const flagAdminAddress = "admin-address"

// options are the values the run and validate flags fill.
type options struct {
	configPath string
	fl         settings
}

func newRunCmd(stderr io.Writer) *cobra.Command {
	o := &options{fl: defaults()}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the server until SIGTERM or SIGINT",
		Long: `Run serves the agent API on --bind, the admin API on --admin-socket (and,
with --admin-address, over mutual TLS for holders of an admin SVID) and
/metrics, /healthz and /readyz on --health-address ("" disables it). Settings
come from --config (YAML: "version: 1" and a "server:" section whose keys
are the flag names in snake_case, plus the store, ca, jwt, svid,
join_token, admin, policy, grants, relying_party and federation sections); flags win
over the file. With store kind etcd, several servers share one etcd
cluster (docs/ha.md).
SIGHUP reloads the grant policy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := o.resolve(cmd.Flags())
			if err != nil {
				return err
			}
			return runServer(cmd.Context(), s, stderr)
		},
	}
	o.bind(cmd.Flags())
	return cmd
}

func newValidateCmd(stdout io.Writer) *cobra.Command {
	o := &options{fl: defaults()}
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a configuration without starting the server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.configPath == "" {
				return usageError{errors.New("validate: --config FILE is required")}
			}
			s, err := o.resolve(cmd.Flags())
			if err != nil {
				return err
			}
			if _, err := buildServer(s, io.Discard); err != nil {
				return usageError{err}
			}
			fmt.Fprintf(stdout, "%s: configuration is valid\n", o.configPath)
			return nil
		},
	}
	o.bind(cmd.Flags())
	return cmd
}

func (o *options) bind(f *pflag.FlagSet) {
	f.StringVar(&o.configPath, "config", "", "YAML config file")
	f.StringVar(&o.fl.DataDir, "data-dir", o.fl.DataDir, "directory for the store and the CA keys (created 0700)")
	f.StringVar(&o.fl.TrustDomain, "trust-domain", o.fl.TrustDomain, "trust domain")
	f.StringVar(&o.fl.Bind, "bind", o.fl.Bind, "agent API address HOST:PORT")
	f.StringVar(&o.fl.AdminSocket, "admin-socket", o.fl.AdminSocket, "admin API Unix socket")
	f.StringVar(&o.fl.HealthAddress, "health-address", o.fl.HealthAddress, `/metrics, /healthz and /readyz address HOST:PORT ("" disables)`)
	f.StringVar(&o.fl.RelyingParty.Address, flagRelyingPartyAddress, o.fl.RelyingParty.Address,
		`relying-party endpoints (/introspect, /jwks; HTTPS with mTLS) HOST:PORT ("" disables)`)
	f.StringVar(&o.fl.Admin.Address, flagAdminAddress, o.fl.Admin.Address,
		`admin API over mutual TLS HOST:PORT, for remote operators with an admin X.509-SVID ("" disables)`)
	f.StringVar(&o.fl.Federation.BundleEndpoint.Address, flagFederationAddress, o.fl.Federation.BundleEndpoint.Address,
		`SPIFFE bundle endpoint HOST:PORT, where federated trust domains fetch this one's bundle ("" disables)`)
	f.StringVar(&o.fl.LogLevel, "log-level", o.fl.LogLevel, "log level: debug, info, warn or error")
	f.StringVar(&o.fl.LogFormat, "log-format", o.fl.LogFormat, "log format: text or json")
}

// resolve merges defaults, the config file and the flags given, in that
// order of precedence from lowest.
func (o *options) resolve(flags *pflag.FlagSet) (settings, error) {
	s := defaults()
	if o.configPath != "" {
		var err error
		if s, err = loadFile(o.configPath, s); err != nil {
			return settings{}, usageError{err}
		}
	}
	applyFlags(&s, o.fl, flags.Changed)
	if flags.Changed(flagRelyingPartyAddress) {
		s.RelyingParty.Address = o.fl.RelyingParty.Address
	}
	if flags.Changed(flagAdminAddress) {
		s.Admin.Address = o.fl.Admin.Address
	}
	if flags.Changed(flagFederationAddress) {
		s.Federation.BundleEndpoint.Address = o.fl.Federation.BundleEndpoint.Address
	}
	return s, nil
}
