package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/nhid/nhid/attestors/all"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/server"
	"github.com/nhid/nhid/pkg/telemetry"
)

// buildServer turns settings into a checked Server logging to logOut.
func buildServer(s settings, logOut io.Writer) (*server.Server, error) {
	cfg, err := toServerConfig(s)
	attestors, attErr := toNodeAttestors(s)
	if err = errors.Join(err, attErr); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	log, err := telemetry.NewLogger(logOut, s.LogLevel, s.LogFormat)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Log, cfg.Metrics, cfg.Gatherer = log, reg, reg
	cfg.NodeVerifiers = func(d server.VerifierDeps) ([]attestor.NodeVerifier, error) {
		return nodeVerifiers(d, attestors)
	}
	return server.New(cfg)
}

// nodeVerifiers is the explicit list of node attestors this binary offers.
func nodeVerifiers(d server.VerifierDeps, n nodeAttestors) ([]attestor.NodeVerifier, error) {
	return all.NodeVerifiers(all.NodeVerifierConfig{
		TrustDomain: d.TrustDomain, Tokens: d.Store, Clock: d.Clock, Log: d.Log,
		K8sPSATClusters: n.psatClusters,
		TPM:             n.tpm,
		AWSIID:          n.awsiid,
	})
}

// runServer runs the server until ctx ends (SIGTERM or SIGINT).
func runServer(ctx context.Context, s settings, logOut io.Writer) error {
	srv, err := buildServer(s, logOut)
	if err != nil {
		return usageError{err}
	}
	stop := reloadOnHangup(ctx, srv)
	defer stop()
	return srv.Run(ctx)
}
