// Package server owns the nhid-server process lifecycle: it opens the
// store and the CA under the data directory, serves the agent API (TLS 1.3
// on TCP, pkg/server/agentapi) and the admin API (a Unix socket authorised
// by peer credentials, pkg/server/adminapi), the gRPC health service on
// both, and /metrics, /healthz and /readyz over HTTP; it runs the periodic
// jobs (pruning, gauges) and shuts everything down in order.
package server

import (
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/svid"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Defaults of Config.
const (
	DefaultBindAddress        = "127.0.0.1:8081"
	DefaultAdminSocket        = "/run/nhid/server.sock"
	DefaultHealthAddress      = "127.0.0.1:8082"
	DefaultTrustDomain        = "example.org"
	DefaultShutdownTimeout    = 10 * time.Second
	DefaultTombstoneRetention = 24 * time.Hour
	DefaultLedgerRetention    = 24 * time.Hour
	DefaultTokenRetention     = time.Hour
	DefaultMaintenanceEvery   = 5 * time.Minute
)

// VerifierDeps is what node verifiers are built from once the store is open.
type VerifierDeps struct {
	TrustDomain spiffeid.TrustDomain
	Store       store.Store
	Clock       clock.Clock
	Log         *slog.Logger
}

// NodeVerifiersFunc builds the node attestors the agent API accepts. The
// binary passes attestors/all's list; pkg/ never imports attestors/.
type NodeVerifiersFunc func(VerifierDeps) ([]attestor.NodeVerifier, error)

// CAConfig holds the CA settings (see pkg/ca).
type CAConfig struct {
	// KeyType of the X.509 CA keys; default ec-p256.
	KeyType svid.KeyType
	// JWTKeyType of the JWT signing keys; default ec-p256.
	JWTKeyType svid.KeyType
	// TTL of each CA certificate and JWT key; default 24h.
	TTL time.Duration
	// Subject of the CA certificates; default O=nhid, CN=nhid CA.
	Subject pkix.Name
	// UpstreamCertFile and UpstreamKeyFile chain the CA under an upstream CA.
	UpstreamCertFile string
	UpstreamKeyFile  string
}

// SVIDConfig holds the SVID lifetimes; zero values take agentapi's defaults.
type SVIDConfig struct {
	AgentTTL       time.Duration
	DefaultX509TTL time.Duration
	DefaultJWTTTL  time.Duration
	MaxJWTTTL      time.Duration
}

// Config configures a Server.
type Config struct {
	// TrustDomain of the server. Required.
	TrustDomain spiffeid.TrustDomain
	// DataDir holds nhid.db (with the bolt store) and ca/; created 0700.
	// Required.
	DataDir string
	// Store selects the store: bbolt in DataDir (default) or etcd.
	Store StoreConfig
	// BindAddress is the agent API's TCP address; default 127.0.0.1:8081.
	BindAddress string
	// AdminSocket is the admin API's Unix socket; default /run/nhid/server.sock.
	// Its directory is created 0770 when missing.
	AdminSocket string
	// AdminAllowedUIDs and AdminAllowedGIDs may call the admin API besides
	// the server's own user.
	AdminAllowedUIDs []uint32
	AdminAllowedGIDs []uint32
	// AdminAddress, if set, also serves the admin API on TCP over mutual
	// TLS: the client presents an X.509-SVID of the trust domain whose
	// SPIFFE ID has an entry marked admin, or is in AdminAllowedIDs.
	// Remote operators and approvers use it (nhidctl --server).
	AdminAddress string
	// AdminAllowedIDs may call the admin API over mTLS without an admin
	// entry: the first operators, before they have registered any.
	AdminAllowedIDs []spiffeid.ID
	// AdminRoles narrow what matching admin identities may call over
	// mTLS (adminapi.Role); an identity no role matches may call all.
	AdminRoles []adminapi.Role
	// HealthAddress serves /metrics, /healthz and /readyz; "" disables it
	// (the binary defaults it to DefaultHealthAddress).
	HealthAddress string
	// CA settings.
	CA CAConfig
	// SVID lifetimes.
	SVID SVIDConfig
	// JoinTokenDefaultTTL is the lifetime of tokens generated without one;
	// default 10m.
	JoinTokenDefaultTTL time.Duration
	// NodeVerifiers builds the node attestors. Required.
	NodeVerifiers NodeVerifiersFunc
	// ShutdownTimeout bounds the graceful stop; default 10s.
	ShutdownTimeout time.Duration
	// TombstoneRetention keeps entry tombstones so that agents offline for
	// less can resume; default 24h.
	TombstoneRetention time.Duration
	// LedgerRetention keeps ledger rows after their SVID expired; default 24h.
	LedgerRetention time.Duration
	// TokenRetention keeps expired join tokens visible; default 1h.
	TokenRetention time.Duration
	// MaintenanceEvery is the period of pruning and gauges; default 5m.
	MaintenanceEvery time.Duration
	// Policy locates the grant policy; without one, grants are refused.
	Policy PolicyConfig
	// Grants holds the grant settings (grants.go).
	Grants GrantsConfig
	// Reputation holds the reputation settings (reputation.go); scores
	// are tracked unless Disabled.
	Reputation ReputationConfig
	// Notify holds the owner notification settings (notify.go).
	Notify NotifyConfig
	// Approvals holds the settings of grants waiting for approval
	// (approvals.go).
	Approvals ApprovalsConfig
	// Audit holds the audit trail settings (audit.go).
	Audit AuditConfig
	// RelyingPartyAddress serves /introspect and /jwks over mTLS; ""
	// disables them (the binary defaults it to DefaultRelyingPartyAddress).
	RelyingPartyAddress string
	// Federation holds the SPIFFE federation settings (federation.go).
	Federation FederationConfig
	// Log defaults to discarding.
	Log *slog.Logger
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Metrics receives every collector; a fresh registry if nil (and then
	// also the one /metrics serves).
	Metrics prometheus.Registerer
	// Gatherer is what /metrics serves; default Metrics if it gathers.
	Gatherer prometheus.Gatherer
}

// Server is one nhid-server process.
type Server struct {
	cfg Config
	log *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	started   atomic.Bool
	stopping  atomic.Bool
	agentAddr atomic.Pointer[net.Addr]
	httpAddr  atomic.Pointer[net.Addr]
	rpAddr    atomic.Pointer[net.Addr]
	adminAddr atomic.Pointer[net.Addr]
	fedAddr   atomic.Pointer[net.Addr]
	// policy is the grant policy engine once loaded, for ReloadPolicy.
	policy atomic.Pointer[policy.Engine]
	// readyCheck answers /readyz once the store is open.
	readyCheck atomic.Pointer[func() error]
}

// New checks cfg, reporting every problem at once, and fills defaults.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: cfg.Log, ready: make(chan struct{})}, nil
}

func (cfg *Config) setDefaults() error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("server config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if cfg.TrustDomain.IsZero() {
		fail("TrustDomain", "required")
	}
	if cfg.DataDir == "" {
		fail("DataDir", "required")
	} else if abs, err := filepath.Abs(cfg.DataDir); err != nil {
		fail("DataDir", "%v", err)
	} else {
		cfg.DataDir = abs
	}
	if cfg.NodeVerifiers == nil {
		fail("NodeVerifiers", "required")
	}
	cfg.BindAddress = orDefault(cfg.BindAddress, DefaultBindAddress)
	if err := ValidateAddress(cfg.BindAddress); err != nil {
		fail("BindAddress", "%v", err)
	}
	if cfg.HealthAddress != "" {
		if err := ValidateAddress(cfg.HealthAddress); err != nil {
			fail("HealthAddress", "%v", err)
		}
	}
	if cfg.AdminAddress != "" {
		if err := ValidateAddress(cfg.AdminAddress); err != nil {
			fail("AdminAddress", "%v", err)
		}
	}
	for i, id := range cfg.AdminAllowedIDs {
		if !id.MemberOf(cfg.TrustDomain) {
			fail(fmt.Sprintf("AdminAllowedIDs[%d]", i), "%q is not in trust domain %q", id, cfg.TrustDomain.Name())
		}
	}
	cfg.AdminSocket = orDefault(cfg.AdminSocket, DefaultAdminSocket)
	if !filepath.IsAbs(cfg.AdminSocket) {
		fail("AdminSocket", "%q is not an absolute path", cfg.AdminSocket)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ShutdownTimeout", &cfg.ShutdownTimeout, DefaultShutdownTimeout},
		{"TombstoneRetention", &cfg.TombstoneRetention, DefaultTombstoneRetention},
		{"LedgerRetention", &cfg.LedgerRetention, DefaultLedgerRetention},
		{"TokenRetention", &cfg.TokenRetention, DefaultTokenRetention},
		{"MaintenanceEvery", &cfg.MaintenanceEvery, DefaultMaintenanceEvery},
	} {
		if *d.v < 0 {
			fail(d.name, "%v is negative", *d.v)
		} else if *d.v == 0 {
			*d.v = d.def
		}
	}
	errs = append(errs, cfg.checkGrants()...)
	errs = append(errs, cfg.checkAudit()...)
	errs = append(errs, cfg.checkReputation()...)
	errs = append(errs, cfg.checkFederation()...)
	errs = append(errs, cfg.Store.check()...)
	cfg.Log = telemetry.OrDiscard(cfg.Log)
	cfg.Clock = clock.OrReal(cfg.Clock)
	if cfg.Metrics == nil {
		reg := prometheus.NewRegistry()
		cfg.Metrics = reg
	}
	if cfg.Gatherer == nil {
		g, ok := cfg.Metrics.(prometheus.Gatherer)
		if !ok {
			fail("Gatherer", "required when Metrics does not gather")
		}
		cfg.Gatherer = g
	}
	return errors.Join(errs...)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// ValidateAddress accepts host:port with a numeric port; the host may be a
// name, an IP or empty (all interfaces).
func ValidateAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if _, err := netip.ParseAddr(host); host != "" && err != nil && !validHostname(host) {
		return fmt.Errorf("%q: host %q is neither an IP address nor a host name", addr, host)
	}
	var n int
	if _, err := fmt.Sscanf(port, "%d", &n); err != nil || n < 0 || n > 65535 || fmt.Sprint(n) != port {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Ready is closed once every listener accepts connections.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the agent API's listening address; nil before Ready.
func (s *Server) Addr() net.Addr { return loadAddr(&s.agentAddr) }

// HealthAddr is the HTTP health address; nil before Ready or when disabled.
func (s *Server) HealthAddr() net.Addr { return loadAddr(&s.httpAddr) }

// AdminSocket is the admin API's socket path.
func (s *Server) AdminSocket() string { return s.cfg.AdminSocket }

func loadAddr(p *atomic.Pointer[net.Addr]) net.Addr {
	if a := p.Load(); a != nil {
		return *a
	}
	return nil
}
