package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/federation"
	"github.com/nhid/nhid/pkg/server"
)

// federationFiles are the files a federation section names: a partner's
// bundle document, a private root and a Web PKI certificate with its key.
type federationFiles struct {
	bundle, roots, cert, key string
}

func writeFederationFiles(t *testing.T) federationFiles {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{partner.ID().URL()},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := spiffebundle.FromX509Authorities(partner, []*x509.Certificate{cert}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	f := federationFiles{
		bundle: filepath.Join(dir, "partner.json"), roots: filepath.Join(dir, "roots.pem"),
		cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key"),
	}
	for path, data := range map[string][]byte{
		f.bundle: doc, f.roots: certPEM, f.cert: certPEM,
		f.key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestToServerConfig_FederationSection(t *testing.T) {
	f := writeFederationFiles(t)
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  federation:
    bundle_endpoint: {address: "0.0.0.0:8443", profile: https_web, cert_file: `+f.cert+`, key_file: `+f.key+`, refresh_hint: 10m}
    federates_with:
      - trust_domain: partner.test
        bundle_endpoint_url: https://bundles.partner.test:8443/
        profile: https_spiffe
        endpoint_spiffe_id: spiffe://partner.test/nhid/server
        bootstrap_bundle: `+f.bundle+`
      - {trust_domain: web.test, bundle_endpoint_url: "https://web.test/bundle.json", profile: https_web, ca_file: `+f.roots+`}
`)
	cfg := mustConvert(t, "--config", path)
	partner := spiffeid.RequireTrustDomainFromString("partner.test")
	want := server.FederationConfig{
		BundleEndpoint: server.BundleEndpointConfig{Address: "0.0.0.0:8443", Profile: federation.ProfileWeb,
			CertFile: f.cert, KeyFile: f.key, RefreshHint: 10 * time.Minute},
		Relationships: []federation.Relationship{
			{TrustDomain: partner, URL: "https://bundles.partner.test:8443/", Profile: federation.ProfileSPIFFE,
				EndpointID: spiffeid.RequireFromPath(partner, "/nhid/server"), BootstrapBundle: f.bundle},
			{TrustDomain: spiffeid.RequireTrustDomainFromString("web.test"), URL: "https://web.test/bundle.json",
				Profile: federation.ProfileWeb, CAFile: f.roots},
		},
	}
	eq := cmp.Comparer(func(a, b spiffeid.TrustDomain) bool { return a == b })
	idEq := cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b })
	if diff := cmp.Diff(want, cfg.Federation, eq, idEq); diff != "" {
		t.Errorf("federation (-want +got):\n%s", diff)
	}
	if _, err := server.New(serverConfigForCheck(cfg)); err != nil {
		t.Errorf("the server refuses the converted settings: %v", err)
	}
	if cfg := mustConvert(t, "--config", path, "--federation-address", "127.0.0.1:9443"); cfg.Federation.BundleEndpoint.Address != "127.0.0.1:9443" {
		t.Errorf("--federation-address did not win: %q", cfg.Federation.BundleEndpoint.Address)
	}
	cfg = mustConvert(t, "--data-dir", "/srv/nhid", "--federation-address", "127.0.0.1:9443")
	if be := cfg.Federation.BundleEndpoint; be.Address != "127.0.0.1:9443" || be.Profile != federation.ProfileSPIFFE {
		t.Errorf("endpoint from the flag alone: %+v; want https_spiffe", be)
	}
}

func TestToServerConfig_FederationProblemsNameTheirPaths(t *testing.T) {
	f := writeFederationFiles(t)
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  federation:
    bundle_endpoint: {address: "0.0.0.0:8443", profile: https_spiffe, cert_file: `+f.cert+`, refresh_hint: 5s}
    federates_with:
      - {trust_domain: example.org, bundle_endpoint_url: "http://x.test/", profile: https_spiffe}
      - {trust_domain: "Partner Test", bundle_endpoint_url: "https://u:p@x.test/", profile: spiffe}
      - {trust_domain: partner.test, bundle_endpoint_url: "https://p.test/", profile: https_spiffe,
         endpoint_spiffe_id: "spiffe://other.test/nhid/server", ca_file: `+f.roots+`}
      - {trust_domain: partner.test, bundle_endpoint_url: "https://p.test/", profile: https_web,
         endpoint_spiffe_id: "spiffe://partner.test/x", ca_file: `+f.bundle+`}
      - {trust_domain: other.test, bundle_endpoint_url: "https://o.test/", profile: https_web, bootstrap_bundle: `+f.bundle+`}
      - {trust_domain: missing.test, bundle_endpoint_url: "https://m.test/", profile: https_web, bootstrap_bundle: /nonexistent/b.json}
`)
	_, err := convertArgs(t, "--config", path)
	for _, want := range []string{
		"server.federation.bundle_endpoint.cert_file: only used with profile https_web",
		"server.federation.bundle_endpoint.refresh_hint: 5s is outside 1m0s to 24h0m0s",
		`server.federation.federates_with[0].trust_domain: "example.org" is this server's own trust domain`,
		`server.federation.federates_with[0].bundle_endpoint_url: scheme "http" is not https`,
		"server.federation.federates_with[0].endpoint_spiffe_id: required with profile https_spiffe",
		`server.federation.federates_with[1].trust_domain: "Partner Test" is not a trust domain name`,
		"server.federation.federates_with[1].bundle_endpoint_url: may not hold user info",
		`server.federation.federates_with[1].profile: "spiffe" is not a profile`,
		`server.federation.federates_with[2].endpoint_spiffe_id: "spiffe://other.test/nhid/server" is not in trust domain "partner.test"`,
		"server.federation.federates_with[2].ca_file: only used with profile https_web",
		`server.federation.federates_with[3].trust_domain: "partner.test" is already the trust domain of server.federation.federates_with[2]`,
		"server.federation.federates_with[3].endpoint_spiffe_id: only used with profile https_spiffe",
		"server.federation.federates_with[3].ca_file: ",
		`server.federation.federates_with[4].bootstrap_bundle: `,
		`is not in trust domain "other.test"`,
		"server.federation.federates_with[5].bootstrap_bundle: open /nonexistent/b.json",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	path = writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  federation:\n    bundle_endpoint: {profile: https_web}\n")
	if _, err := convertArgs(t, "--config", path); err == nil ||
		!strings.Contains(err.Error(), "server.federation.bundle_endpoint.address: required when other bundle_endpoint settings are given") {
		t.Errorf("endpoint settings without an address: %v", err)
	}
	path = writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  federation:\n    bundle_endpoint: {address: \"127.0.0.1:1\", profile: https_web, cert_file: "+f.cert+", key_file: "+f.bundle+"}\n")
	if _, err := convertArgs(t, "--config", path); err == nil || !strings.Contains(err.Error(), "server.federation.bundle_endpoint.cert_file: load certificate") {
		t.Errorf("a key file that is not a key: %v", err)
	}
}
