package main

import (
	"reflect"
	"strings"

	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/server"
)

// configVersion is the config file version this binary reads.
const configVersion = 1

// fileConfig is the config file: `version: 1` and a `server:` section.
type fileConfig struct {
	Server settings `yaml:"server"`
}

// settings are the server's settings. The top-level ones also have a flag
// of the same name with dashes (--data-dir for data_dir, --bind for bind),
// and flags win over the file.
type settings struct {
	DataDir       string `yaml:"data_dir"`
	TrustDomain   string `yaml:"trust_domain"`
	Bind          string `yaml:"bind"`
	AdminSocket   string `yaml:"admin_socket"`
	HealthAddress string `yaml:"health_address"`
	LogLevel      string `yaml:"log_level"`
	LogFormat     string `yaml:"log_format"`

	Store     storeSettings     `yaml:"store"`
	CA        caSettings        `yaml:"ca"`
	JWT       jwtSettings       `yaml:"jwt"`
	SVID      svidSettings      `yaml:"svid"`
	JoinToken joinTokenSettings `yaml:"join_token"`
	Admin     adminSettings     `yaml:"admin"`
	K8sPSAT   psatSettings      `yaml:"k8s_psat"`
	TPM       tpmSettings       `yaml:"tpm"`
	AWSIID    awsiidSettings    `yaml:"aws_iid"`

	Policy       policySettings       `yaml:"policy"`
	Grants       grantSettings        `yaml:"grants"`
	Approvals    approvalSettings     `yaml:"approvals"`
	RelyingParty relyingPartySettings `yaml:"relying_party"`
	Audit        auditSettings        `yaml:"audit"`
	Reputation   reputationSettings   `yaml:"reputation"`
	Notify       notifySettings       `yaml:"notify"`
	Federation   federationSettings   `yaml:"federation"`
}

type caSettings struct {
	KeyType  string           `yaml:"key_type"`
	TTL      string           `yaml:"ttl"`
	Subject  subjectSettings  `yaml:"subject"`
	Upstream upstreamSettings `yaml:"upstream"`
}

type subjectSettings struct {
	Country      string `yaml:"country"`
	Organization string `yaml:"organization"`
	CommonName   string `yaml:"common_name"`
}

type upstreamSettings struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type jwtSettings struct {
	KeyType string `yaml:"key_type"`
}

type svidSettings struct {
	DefaultX509TTL string `yaml:"default_x509_ttl"`
	DefaultJWTTTL  string `yaml:"default_jwt_ttl"`
	AgentTTL       string `yaml:"agent_ttl"`
}

type joinTokenSettings struct {
	DefaultTTL string `yaml:"default_ttl"`
}

type adminSettings struct {
	AllowedUIDs []uint32 `yaml:"allowed_uids"`
	AllowedGIDs []uint32 `yaml:"allowed_gids"`
	// Address serves the admin API over mutual TLS as well ("" = off).
	Address          string   `yaml:"address"`
	AllowedSPIFFEIDs []string `yaml:"allowed_spiffe_ids"`
	// Roles narrow what some admin identities may do over mTLS.
	Roles []adminRoleSettings `yaml:"roles"`
}

type adminRoleSettings struct {
	Name        string   `yaml:"name"`
	SPIFFEIDs   []string `yaml:"spiffe_ids"`
	Permissions []string `yaml:"permissions"`
}

// Default settings; what a setting left out of file and flags means.
const (
	defaultDataDir   = "/var/lib/nhid/server"
	defaultLogLevel  = "info"
	defaultLogFormat = "text"
)

func defaults() settings {
	return settings{
		DataDir:       defaultDataDir,
		TrustDomain:   server.DefaultTrustDomain,
		Bind:          server.DefaultBindAddress,
		AdminSocket:   server.DefaultAdminSocket,
		HealthAddress: server.DefaultHealthAddress,
		LogLevel:      defaultLogLevel,
		LogFormat:     defaultLogFormat,
		RelyingParty:  relyingPartySettings{Address: server.DefaultRelyingPartyAddress},
	}
}

// loadFile reads the config file at path over base: settings the file
// leaves out keep base's values.
func loadFile(path string, base settings) (settings, error) {
	fc := fileConfig{Server: base}
	if err := config.Load(path, configVersion, &fc); err != nil {
		return settings{}, err
	}
	return fc.Server, nil
}

// flagName is the flag of the top-level setting with the given YAML key.
func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// applyFlags copies into dst the top-level string settings whose flags were
// given, so flags win over the file, even when they set a value to empty
// (--health-address "" disables the health server).
func applyFlags(dst *settings, flags settings, changed func(name string) bool) {
	dv, fv := reflect.ValueOf(dst).Elem(), reflect.ValueOf(flags)
	t := dv.Type()
	for i := range t.NumField() {
		if t.Field(i).Type.Kind() != reflect.String {
			continue
		}
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if changed(flagName(key)) {
			dv.Field(i).Set(fv.Field(i))
		}
	}
}
