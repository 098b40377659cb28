package ca

import (
	"context"
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nhid/nhid/pkg/svid"
)

// TestUpstream_CertificatesInTheSVIDChainMustBeSigningCertificates: the
// upstream certificates between nhid's intermediate and the root travel in
// every X.509-SVID chain, so they must be X509-SVID signing certificates:
// keyUsage keyCertSign (§3.2, §4.3) and no SPIFFE ID with a path (§3.2).
// An issuing CA without keyUsage, which RFC 5280 allows and openssl makes
// by default, used to be accepted; go-spiffe's client then refused every
// SVID. A root without keyUsage stays in the bundle and is fine.
func TestUpstream_CertificatesInTheSVIDChainMustBeSigningCertificates(t *testing.T) {
	spiffeURI := func(s string) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = []*url.URL{u}
		}
	}
	tests := []struct {
		name    string
		opts    upstreamOpts
		wantErr string // empty: New succeeds and SVIDs parse with go-spiffe
	}{
		{"issuing CA with keyCertSign", upstreamOpts{issuing: true}, ""},
		{"issuing CA with a trust domain SPIFFE ID", upstreamOpts{issuing: true, mutate: spiffeURI("spiffe://example.org")}, ""},
		{"root without keyUsage", upstreamOpts{mutate: func(c *x509.Certificate) { c.KeyUsage = 0 }}, ""},
		{"issuing CA without keyUsage", upstreamOpts{issuing: true, mutate: func(c *x509.Certificate) { c.KeyUsage = 0 }},
			`certificate "CN=corp issuing,O=Corp" goes into every SVID chain but has no keyCertSign key usage`},
		{"issuing CA with only cRLSign", upstreamOpts{issuing: true, mutate: func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCRLSign }},
			"keyCertSign key usage"},
		{"issuing CA with a SPIFFE ID with a path", upstreamOpts{issuing: true, mutate: spiffeURI("spiffe://example.org/corp/issuing")},
			`its URI SAN "spiffe://example.org/corp/issuing" is not a SPIFFE ID without a path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testStart)
			u := newUpstream(t, tt.opts)
			cfg := e.config()
			withUpstream(u)(&cfg)
			c, err := New(context.Background(), cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "UpstreamCertFile") {
					t.Fatalf("New error = %v, want it to name UpstreamCertFile and contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			// What go-spiffe's Workload API client does with x509_svid and
			// x509_svid_key.
			key := mustKey(t, svid.KeyTypeECP256)
			chain, err := c.SignX509SVID(context.Background(), X509Params{ID: testID, PublicKey: key.Public(), TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				t.Fatal(err)
			}
			var chainDER []byte
			for _, cert := range chain {
				chainDER = append(chainDER, cert.Raw...)
			}
			if _, err := x509svid.ParseRaw(chainDER, keyDER); err != nil {
				t.Fatalf("go-spiffe refuses the SVID: %v", err)
			}
		})
	}
}
