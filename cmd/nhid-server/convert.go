package main

import (
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/server"
	"github.com/nhid/nhid/pkg/svid"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Bounds checked here so that a mistake is reported with its setting's
// path rather than by the component that would refuse it.
const (
	minSVIDTTL      = time.Minute
	maxSVIDTTL      = 30 * 24 * time.Hour
	maxJoinTokenTTL = 7 * 24 * time.Hour
)

// toServerConfig converts settings into server.Config, reporting every
// problem at once with its path. Log, Metrics and NodeVerifiers are the
// caller's to fill.
func toServerConfig(s settings) (server.Config, error) {
	var errs config.Errors
	cfg := server.Config{
		TrustDomain:      trustDomain(&errs, "server.trust_domain", s.TrustDomain),
		DataDir:          dataDir(&errs, "server.data_dir", s.DataDir),
		BindAddress:      address(&errs, "server.bind", s.Bind, false),
		AdminSocket:      socketPath(&errs, "server.admin_socket", s.AdminSocket),
		HealthAddress:    address(&errs, "server.health_address", s.HealthAddress, true),
		CA:               caConfig(&errs, "server", s.CA, s.JWT),
		SVID:             svidConfig(&errs, "server.svid", s.SVID),
		AdminAllowedUIDs: s.Admin.AllowedUIDs,
		AdminAllowedGIDs: s.Admin.AllowedGIDs,
	}
	cfg.AdminAddress = address(&errs, "server.admin.address", s.Admin.Address, true)
	cfg.AdminAllowedIDs = spiffeIDs(&errs, "server.admin.allowed_spiffe_ids", cfg.TrustDomain, s.Admin.AllowedSPIFFEIDs)
	cfg.AdminRoles = adminRoles(&errs, "server.admin.roles", cfg.TrustDomain, s.Admin.Roles)
	cfg.Store = storeConfig(&errs, "server.store", s.Store)
	cfg.JoinTokenDefaultTTL = ttl(&errs, "server.join_token.default_ttl", s.JoinToken.DefaultTTL, time.Second, maxJoinTokenTTL)
	cfg.Policy = policyConfig(&errs, "server.policy", s.Policy)
	cfg.Grants = grantsConfig(&errs, "server.grants", s.Grants)
	cfg.Approvals = approvalsConfig(&errs, "server.approvals", s.Approvals)
	cfg.RelyingPartyAddress = address(&errs, "server.relying_party.address", s.RelyingParty.Address, true)
	cfg.Audit = auditConfig(&errs, "server.audit", s.Audit)
	cfg.Reputation = reputationConfig(&errs, "server.reputation", s.Reputation)
	cfg.Notify = notifyConfig(&errs, "server.notify", s.Notify)
	cfg.Federation = federationConfig(&errs, "server.federation", cfg.TrustDomain, s.Federation)
	logSettings(&errs, s)
	return cfg, errs.Err()
}

func trustDomain(errs *config.Errors, path, s string) spiffeid.TrustDomain {
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		errs.Addf(path, "%q is not a trust domain: %v", s, err)
	}
	return td
}

func dataDir(errs *config.Errors, path, s string) string {
	if s == "" {
		errs.Addf(path, "must be set (--data-dir DIR)")
		return ""
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		errs.Addf(path, "%v", err)
	}
	return abs
}

func address(errs *config.Errors, path, s string, optional bool) string {
	if s == "" && optional {
		return ""
	}
	if err := server.ValidateAddress(s); err != nil {
		errs.Addf(path, "%v", err)
	}
	return s
}

func socketPath(errs *config.Errors, path, s string) string {
	if !filepath.IsAbs(s) {
		errs.Addf(path, "%q must be an absolute path", s)
	}
	return s
}

// caConfig converts the ca and jwt sections.
func caConfig(errs *config.Errors, path string, c caSettings, j jwtSettings) server.CAConfig {
	out := server.CAConfig{
		KeyType:    keyType(errs, config.Join(path, "ca", "key_type"), c.KeyType),
		JWTKeyType: keyType(errs, config.Join(path, "jwt", "key_type"), j.KeyType),
		TTL:        ttl(errs, config.Join(path, "ca", "ttl"), c.TTL, ca.MinTTL, 10*365*24*time.Hour),
		Subject:    subject(c.Subject),
	}
	up := config.Join(path, "ca", "upstream")
	switch u := c.Upstream; {
	case u.CertFile == "" && u.KeyFile == "":
	case u.CertFile == "":
		errs.Addf(config.Join(up, "cert_file"), "required when key_file is set")
	case u.KeyFile == "":
		errs.Addf(config.Join(up, "key_file"), "required when cert_file is set")
	default:
		out.UpstreamCertFile = readableFile(errs, config.Join(up, "cert_file"), u.CertFile)
		out.UpstreamKeyFile = readableFile(errs, config.Join(up, "key_file"), u.KeyFile)
	}
	return out
}

func keyType(errs *config.Errors, path, s string) svid.KeyType {
	if s == "" {
		return ""
	}
	kt, err := svid.ParseKeyType(s)
	if err != nil {
		errs.Addf(path, "%v", err)
	}
	return kt
}

func subject(s subjectSettings) pkix.Name {
	var n pkix.Name
	if s.Country != "" {
		n.Country = []string{s.Country}
	}
	if s.Organization != "" {
		n.Organization = []string{s.Organization}
	}
	n.CommonName = s.CommonName
	return n
}

func readableFile(errs *config.Errors, path, file string) string {
	f, err := os.Open(file)
	if err != nil {
		errs.Addf(path, "%v", err)
		return file
	}
	_ = f.Close()
	return file
}

func svidConfig(errs *config.Errors, path string, s svidSettings) server.SVIDConfig {
	return server.SVIDConfig{
		DefaultX509TTL: ttl(errs, config.Join(path, "default_x509_ttl"), s.DefaultX509TTL, minSVIDTTL, maxSVIDTTL),
		DefaultJWTTTL:  ttl(errs, config.Join(path, "default_jwt_ttl"), s.DefaultJWTTTL, 30*time.Second, 24*time.Hour),
		AgentTTL:       ttl(errs, config.Join(path, "agent_ttl"), s.AgentTTL, minSVIDTTL, maxSVIDTTL),
	}
}

// ttl parses a duration that, when set, must lie within [lo, hi].
func ttl(errs *config.Errors, path, s string, lo, hi time.Duration) time.Duration {
	if s == "" {
		return 0
	}
	before := errs.Len()
	d := config.Duration(errs, path, s)
	if errs.Len() > before {
		return 0
	}
	if d < lo || d > hi {
		errs.Addf(path, "%s is outside %s to %s", s, lo, hi)
		return 0
	}
	return d
}

func logSettings(errs *config.Errors, s settings) {
	if _, err := telemetry.ParseLogLevel(s.LogLevel); err != nil {
		errs.Addf("server.log_level", "must be one of %s, got %q", strings.Join(telemetry.LogLevels, ", "), s.LogLevel)
	}
	if !slices.Contains(telemetry.LogFormats, strings.ToLower(s.LogFormat)) {
		errs.Addf("server.log_format", "must be one of %s, got %q", strings.Join(telemetry.LogFormats, ", "), s.LogFormat)
	}
}
