package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLSFiles are the PEM files that secure the connection to etcd.
type TLSFiles struct {
	// CAFile holds the CA certificates etcd's server certificates chain
	// to; the system roots when empty.
	CAFile string
	// CertFile and KeyFile are the client certificate and key, for an
	// etcd that runs with --client-cert-auth. They are read again at every
	// connection, so a rotated certificate is picked up without a restart.
	CertFile, KeyFile string
}

// set reports whether any file is configured.
func (t TLSFiles) set() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// check reports a certificate without its key and the reverse.
func (t TLSFiles) check() error {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		return errors.New("tls.key_file: required with tls.cert_file")
	case t.CertFile == "" && t.KeyFile != "":
		return errors.New("tls.cert_file: required with tls.key_file")
	}
	return nil
}

// tlsConfig builds the client TLS configuration: nil (plain TCP) when no
// file is set and no endpoint asks for https.
func (cfg Config) tlsConfig() (*tls.Config, error) {
	t := cfg.TLS
	https := false
	for _, ep := range cfg.Endpoints {
		https = https || strings.HasPrefix(ep, "https://")
	}
	if !t.set() && !https {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate found", t.CAFile)
		}
		conf.RootCAs = pool
	}
	if t.CertFile != "" {
		// Fail at startup on a bad pair rather than at the first dial.
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			return nil, fmt.Errorf("tls.cert_file/key_file: %w", err)
		}
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("load etcd client certificate: %w", err)
			}
			return &c, nil
		}
	}
	return conf, nil
}
