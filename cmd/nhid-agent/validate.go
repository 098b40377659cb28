package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/nhid/nhid/attestors/all"
	"github.com/nhid/nhid/pkg/telemetry"
)

// newValidateCmd checks a config file the way run reads it, without
// touching the data dir, the files the config names or the network, so a
// config can be checked before it is shipped (a ConfigMap, say).
func newValidateCmd(stdout io.Writer, getenv func(string) string) *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a configuration file without starting the agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return usageError{errors.New("validate: --config FILE is required")}
			}
			s, err := gather(configPath, defaults(), cmd.Flags())
			if err != nil {
				return usageError{err}
			}
			if err := validateSettings(s, getenv); err != nil {
				return usageError{err}
			}
			fmt.Fprintf(stdout, "%s: configuration is valid\n", configPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML config file")
	return cmd
}

// validateSettings makes the checks run makes before it starts the agent.
func validateSettings(s settings, getenv func(string) string) error {
	r, err := s.check(getenv)
	if err != nil {
		return fmt.Errorf("invalid settings:\n%w", err)
	}
	if _, err := telemetry.ParseLogLevel(s.LogLevel); err != nil {
		return fmt.Errorf("agent.log_level: %w", err)
	}
	if r.joinToken != "" || s.NodeAttestor != "join_token" {
		cfg := all.NodeEvidenceConfig{JoinToken: r.joinToken, K8sPSAT: r.psat, AWSIID: r.awsiid}
		if _, err := all.NodeEvidence(s.NodeAttestor, cfg); err != nil {
			return fmt.Errorf("agent.node_attestor: %w", err)
		}
	}
	return nil
}
