package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agent/agentsvid"
	"github.com/nhid/nhid/pkg/agent/keys"
	"github.com/nhid/nhid/pkg/agent/manager"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/workloadapi"
)

// Defaults the binary offers.
const (
	DefaultSocketPath    = "/run/nhid/agent.sock"
	DefaultHealthAddress = "127.0.0.1:8088"
	DefaultDataDir       = "/var/lib/nhid-agent"
)

// bundleFile is the trust bundle the agent keeps in its data directory
// (PEM certificates): after the first attestation it, not the bootstrap
// bundle, decides which server the agent trusts.
const bundleFile = "bundle.pem"

// Config configures New.
type Config struct {
	// TrustDomain is the agent's trust domain. Required.
	TrustDomain spiffeid.TrustDomain
	// DataDir holds the cache, the agent SVID and the bundle; created 0700
	// if missing. Required.
	DataDir string
	// ServerAddress is the servers' agent API: HOST:PORT, or several
	// separated by commas; a host may be a DNS name standing for several
	// servers. The agent connects to one and fails over to the others.
	// Required.
	ServerAddress string
	// TrustBundleFile is a PEM file of the server's CA certificates, used
	// to verify the server until the agent holds a bundle of its own.
	TrustBundleFile string
	// InsecureBootstrap trusts whatever server answers the very first
	// attestation. The bundle it returns is trusted from then on.
	InsecureBootstrap bool
	// NodeEvidence proves the node's identity when it has to attest (the
	// binary builds it from attestors/all). Nil is allowed while the data
	// dir holds a usable agent SVID.
	NodeEvidence attestor.NodeEvidence
	// WorkloadAttestor finds the selectors of Workload API callers (the
	// binary combines attestors/all's workload attestors). Required.
	WorkloadAttestor workloadapi.Attestor
	// SocketPath is the Workload API socket; default DefaultSocketPath.
	SocketPath string
	// HealthAddress serves /healthz, /readyz and /metrics; "" disables it.
	HealthAddress string
	// KeyType of workload keys; default ec-p256.
	KeyType string
	// MaxPreMintedSVIDs bounds the SVIDs minted ahead of demand; 0 means
	// manager.DefaultMaxPreMintedSVIDs.
	MaxPreMintedSVIDs int
	Log               *slog.Logger
	Clock             clock.Clock
	// Metrics registers the agent's metrics. If it is also a Gatherer,
	// /metrics serves it; nil uses a registry of the agent's own.
	Metrics prometheus.Registerer
}

// validate checks cfg, fills in defaults and prepares the data dir.
func (cfg *Config) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.TrustDomain.IsZero() {
		add("trust_domain: must be set")
	}
	if cfg.DataDir == "" {
		add("data_dir: must be set")
	}
	if err := checkServers(cfg.ServerAddress); err != nil {
		add("server_address: %v", err)
	}
	if cfg.TrustBundleFile != "" && cfg.InsecureBootstrap {
		add("trust_bundle and insecure_bootstrap: choose one: a trust bundle verifies the server, insecure bootstrap does not")
	}
	if cfg.WorkloadAttestor == nil {
		add("workload attestor: must be set")
	}
	if cfg.SocketPath == "" {
		cfg.SocketPath = DefaultSocketPath
	}
	if !filepath.IsAbs(cfg.SocketPath) {
		add("socket_path: %q must be absolute", cfg.SocketPath)
	}
	if cfg.HealthAddress != "" {
		if err := checkHostPort(cfg.HealthAddress); err != nil {
			add("health_address: %v", err)
		}
	}
	if cfg.KeyType == "" {
		cfg.KeyType = keys.Default
	}
	if err := keys.Check(cfg.KeyType); err != nil {
		add("key_type: %v", err)
	}
	if cfg.MaxPreMintedSVIDs < 0 {
		add("max_pre_minted_svids: must not be negative, got %d", cfg.MaxPreMintedSVIDs)
	}
	if cfg.MaxPreMintedSVIDs == 0 {
		cfg.MaxPreMintedSVIDs = manager.DefaultMaxPreMintedSVIDs
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return cfg.checkDataDir()
}

func checkHostPort(addr string) error {
	if addr == "" {
		return errors.New("must be set (HOST:PORT)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	return nil
}

// checkDataDir creates the data dir and checks the agent can start from
// what it holds: it must be able to trust the server and, without a
// stored SVID, to attest.
func (cfg *Config) checkDataDir() error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	_, err := os.Stat(filepath.Join(cfg.DataDir, bundleFile))
	hasBundle := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("data_dir: %w", err)
	}
	if !hasBundle && cfg.TrustBundleFile == "" && !cfg.InsecureBootstrap {
		return errors.New("no trust bundle: pass --trust-bundle FILE with the server's CA certificates " +
			"(`nhidctl bundle show` prints them), or --insecure-bootstrap to trust the server the agent first reaches")
	}
	if cfg.NodeEvidence == nil {
		_, err := os.Stat(filepath.Join(cfg.DataDir, agentsvid.FileName))
		if errors.Is(err, fs.ErrNotExist) {
			return errors.New("no node attestation evidence: the agent has not attested yet; " +
				"pass --join-token with a token from `nhidctl token generate`")
		}
	}
	return nil
}

// warnLooseDataDir flags a data dir others can read: it holds private keys.
func warnLooseDataDir(dir string, log *slog.Logger) {
	fi, err := os.Stat(dir)
	if err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("data dir is accessible to group or others; it holds private keys: chmod 700 it",
			"path", dir, "mode", fi.Mode().Perm().String())
	}
}
