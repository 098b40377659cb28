package etcd_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// pki is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type pki struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T, dir, name string) pki {
	t.Helper()
	caKey, caCert := newCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name + " CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil)
	srvKey, srvCert := newCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "etcd"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caCert, caKey)
	cliKey, cliCert := newCert(t, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "nhid-server"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, caKey)
	p := pki{
		caFile:     filepath.Join(dir, name+"-ca.pem"),
		serverCert: filepath.Join(dir, name+"-server.pem"), serverKey: filepath.Join(dir, name+"-server-key.pem"),
		clientCert: filepath.Join(dir, name+"-client.pem"), clientKey: filepath.Join(dir, name+"-client-key.pem"),
	}
	writePEM(t, p.caFile, "CERTIFICATE", caCert.Raw)
	writePEM(t, p.serverCert, "CERTIFICATE", srvCert.Raw)
	writePEM(t, p.serverKey, "PRIVATE KEY", marshalKey(t, srvKey))
	writePEM(t, p.clientCert, "CERTIFICATE", cliCert.Raw)
	writePEM(t, p.clientKey, "PRIVATE KEY", marshalKey(t, cliKey))
	return p
}

// newCert signs tmpl with parent (itself when parent is nil).
func newCert(t *testing.T, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func marshalKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTLS_MutualTLSToEtcdWorksAndWrongCredentialsAreRefused(t *testing.T) {
	dir := t.TempDir()
	good := newPKI(t, dir, "good")
	other := newPKI(t, dir, "other")
	m := etcdtest.Start(t, etcdtest.Options{TLS: &etcdtest.ServerTLS{
		CertFile: good.serverCert, KeyFile: good.serverKey, ClientCAFile: good.caFile,
	}})
	if !strings.HasPrefix(m.ClientURL, "https://") {
		t.Fatalf("member serves %s, want https", m.ClientURL)
	}

	s := openStore(t, []string{m.ClientURL}, etcd.Config{TLS: etcd.TLSFiles{CAFile: good.caFile, CertFile: good.clientCert, KeyFile: good.clientKey}})
	created, errs, err := s.CreateEntries(t.Context(), []*typesv1.Entry{{SpiffeId: "spiffe://example.org/w", ParentId: "spiffe://example.org/agent"}})
	if err != nil || errs[0] != nil {
		t.Fatalf("CreateEntries over mTLS: %v, %v", err, errs)
	}
	if got, err := s.GetEntry(t.Context(), created[0].Id); err != nil || got.SpiffeId != "spiffe://example.org/w" {
		t.Fatalf("GetEntry over mTLS = %v, %v", got, err)
	}

	tests := []struct {
		name string
		tls  etcd.TLSFiles
	}{
		{"no client certificate", etcd.TLSFiles{CAFile: good.caFile}},
		{"client certificate of another CA", etcd.TLSFiles{CAFile: good.caFile, CertFile: other.clientCert, KeyFile: other.clientKey}},
		{"server not trusted", etcd.TLSFiles{CAFile: other.caFile, CertFile: good.clientCert, KeyFile: good.clientKey}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := etcd.Open(t.Context(), etcd.Config{
				Endpoints: []string{m.ClientURL}, Prefix: "/refused/", TLS: tc.tls,
				DialTimeout: time.Second, RequestTimeout: 2 * time.Second,
			})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("Open: %v; want an error wrapping ErrUnavailable", err)
			}
		})
	}
}

func TestOpen_BadTLSFilesAreReportedAtOnce(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir, "x")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tls  etcd.TLSFiles
		want string
	}{
		{"certificate without key", etcd.TLSFiles{CertFile: p.clientCert}, "tls.key_file"},
		{"key without certificate", etcd.TLSFiles{KeyFile: p.clientKey}, "tls.cert_file"},
		{"missing CA file", etcd.TLSFiles{CAFile: filepath.Join(dir, "none.pem")}, "tls.ca_file"},
		{"CA file without PEM", etcd.TLSFiles{CAFile: garbage}, "no PEM certificate"},
		{"mismatched pair", etcd.TLSFiles{CertFile: p.clientCert, KeyFile: p.serverKey}, "tls.cert_file/key_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := etcd.Open(t.Context(), etcd.Config{Endpoints: []string{"https://127.0.0.1:1"}, TLS: tc.tls})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v; want an error naming %s", err, tc.want)
			}
		})
	}
}
