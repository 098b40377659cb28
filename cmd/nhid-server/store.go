package main

import (
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/server"
	"github.com/nhid/nhid/pkg/store/etcd"
)

// storeSettings is the store section:
//
//	store:
//	  kind: etcd                  # bolt (default) or etcd
//	  endpoints: [https://etcd-0.etcd:2379, https://etcd-1.etcd:2379]
//	  prefix: /nhid/              # keys of this trust domain
//	  tls: {ca_file: ..., cert_file: ..., key_file: ...}
//	  username: nhid              # etcd auth, password in password_file
//	  password_file: /run/secrets/etcd-password
//	  dial_timeout: 5s
//	  request_timeout: 5s
//	  lease_ttl: 10s              # failover time of the maintenance leader
type storeSettings struct {
	Kind           string           `yaml:"kind"`
	Endpoints      []string         `yaml:"endpoints"`
	Prefix         string           `yaml:"prefix"`
	TLS            storeTLSSettings `yaml:"tls"`
	Username       string           `yaml:"username"`
	PasswordFile   string           `yaml:"password_file"`
	DialTimeout    string           `yaml:"dial_timeout"`
	RequestTimeout string           `yaml:"request_timeout"`
	LeaseTTL       string           `yaml:"lease_ttl"`
}

type storeTLSSettings struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Bounds of the store timeouts.
const (
	maxStoreTimeout = 5 * time.Minute
	maxLeaseTTL     = 10 * time.Minute
)

// storeConfig converts the store section; an absent section is the bolt
// store in the data dir.
func storeConfig(errs *config.Errors, path string, s storeSettings) server.StoreConfig {
	switch s.Kind {
	case "", server.StoreBolt:
		if len(s.Endpoints) > 0 || s.Prefix != "" || s.TLS != (storeTLSSettings{}) {
			errs.Addf(config.Join(path, "kind"), "is %q, but etcd settings are set: set kind: etcd", orBolt(s.Kind))
		}
		return server.StoreConfig{Kind: s.Kind}
	case server.StoreEtcd:
	default:
		errs.Addf(config.Join(path, "kind"), "must be one of %s, %s, got %q", server.StoreBolt, server.StoreEtcd, s.Kind)
		return server.StoreConfig{}
	}
	cfg := etcd.Config{
		Endpoints:      endpoints(errs, config.Join(path, "endpoints"), s.Endpoints),
		Prefix:         s.Prefix,
		Username:       s.Username,
		DialTimeout:    ttl(errs, config.Join(path, "dial_timeout"), s.DialTimeout, 100*time.Millisecond, maxStoreTimeout),
		RequestTimeout: ttl(errs, config.Join(path, "request_timeout"), s.RequestTimeout, 100*time.Millisecond, maxStoreTimeout),
		LeaseTTL:       ttl(errs, config.Join(path, "lease_ttl"), s.LeaseTTL, 2*time.Second, maxLeaseTTL),
	}
	if cfg.Prefix != "" && (!strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/")) {
		errs.Addf(config.Join(path, "prefix"), "%q must start and end with /", cfg.Prefix)
	}
	if cfg.LeaseTTL%time.Second != 0 {
		errs.Addf(config.Join(path, "lease_ttl"), "%s must be whole seconds", s.LeaseTTL)
	}
	switch {
	case s.Username == "" && s.PasswordFile != "":
		errs.Addf(config.Join(path, "username"), "required with password_file")
	case s.Username != "" && s.PasswordFile == "":
		errs.Addf(config.Join(path, "password_file"), "required with username")
	case s.PasswordFile != "":
		cfg.Password = readSecret(errs, config.Join(path, "password_file"), s.PasswordFile)
	}
	cfg.TLS = storeTLS(errs, config.Join(path, "tls"), s.TLS)
	return server.StoreConfig{Kind: server.StoreEtcd, Etcd: cfg}
}

func orBolt(kind string) string {
	if kind == "" {
		return server.StoreBolt
	}
	return kind
}

// endpoints checks the etcd client URLs.
func endpoints(errs *config.Errors, path string, eps []string) []string {
	if len(eps) == 0 {
		errs.Addf(path, "at least one etcd endpoint is required with kind: etcd")
	}
	for i, ep := range eps {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs.Addf(config.Index(path, i), "%q is not an http:// or https:// URL with a host", ep)
		}
	}
	return eps
}

func storeTLS(errs *config.Errors, path string, s storeTLSSettings) etcd.TLSFiles {
	switch {
	case s.CertFile != "" && s.KeyFile == "":
		errs.Addf(config.Join(path, "key_file"), "required when cert_file is set")
	case s.CertFile == "" && s.KeyFile != "":
		errs.Addf(config.Join(path, "cert_file"), "required when key_file is set")
	}
	out := etcd.TLSFiles{}
	if s.CAFile != "" {
		out.CAFile = readableFile(errs, config.Join(path, "ca_file"), s.CAFile)
	}
	if s.CertFile != "" && s.KeyFile != "" {
		out.CertFile = readableFile(errs, config.Join(path, "cert_file"), s.CertFile)
		out.KeyFile = readableFile(errs, config.Join(path, "key_file"), s.KeyFile)
	}
	return out
}

// readSecret reads a one-line secret file, never echoing its content.
func readSecret(errs *config.Errors, path, file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		errs.Addf(path, "%v", err)
		return ""
	}
	secret := strings.TrimRight(string(b), "\r\n")
	if secret == "" {
		errs.Addf(path, "%s is empty", file)
	}
	return secret
}
