package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/server"
	"github.com/nhid/nhid/pkg/store/etcd"
)

func TestToServerConfig_EtcdStoreSection(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"ca.pem": "ca", "cert.pem": "cert", "key.pem": "key", "password": "s3cret\n", "empty": ""}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  store:
    kind: etcd
    endpoints: [https://etcd-0:2379, https://etcd-1:2379]
    prefix: /prod/
    tls: {ca_file: `+dir+`/ca.pem, cert_file: `+dir+`/cert.pem, key_file: `+dir+`/key.pem}
    username: nhid
    password_file: `+dir+`/password
    dial_timeout: 3s
    request_timeout: 4s
    lease_ttl: 15s
`)
	cfg := mustConvert(t, "--config", path)
	want := server.StoreConfig{Kind: server.StoreEtcd, Etcd: etcd.Config{
		Endpoints: []string{"https://etcd-0:2379", "https://etcd-1:2379"}, Prefix: "/prod/",
		TLS:      etcd.TLSFiles{CAFile: dir + "/ca.pem", CertFile: dir + "/cert.pem", KeyFile: dir + "/key.pem"},
		Username: "nhid", Password: "s3cret",
		DialTimeout: 3 * time.Second, RequestTimeout: 4 * time.Second, LeaseTTL: 15 * time.Second,
	}}
	if diff := cmp.Diff(want, cfg.Store); diff != "" {
		t.Errorf("store config (-want +got):\n%s", diff)
	}
}

func TestToServerConfig_BadStoreSettingsAreReportedWithTheirPaths(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		store string
		want  []string
	}{
		{"unknown kind", `{kind: consul}`, []string{"server.store.kind: must be one of bolt, etcd"}},
		{"etcd settings with bolt", `{endpoints: [http://e:2379]}`, []string{"server.store.kind: is \"bolt\", but etcd settings are set"}},
		{"no endpoint", `{kind: etcd}`, []string{"server.store.endpoints: at least one"}},
		{"not a URL", `{kind: etcd, endpoints: ["etcd:2379", "http://"]}`, []string{"server.store.endpoints[0]", "server.store.endpoints[1]"}},
		{"bad prefix", `{kind: etcd, endpoints: [http://e:2379], prefix: nhid}`, []string{"server.store.prefix"}},
		{"certificate without key", `{kind: etcd, endpoints: [http://e:2379], tls: {cert_file: /x}}`, []string{"server.store.tls.key_file: required"}},
		{"missing CA file", `{kind: etcd, endpoints: [http://e:2379], tls: {ca_file: /nonexistent/ca.pem}}`, []string{"server.store.tls.ca_file"}},
		{"user without password", `{kind: etcd, endpoints: [http://e:2379], username: u}`, []string{"server.store.password_file: required"}},
		{"empty password", `{kind: etcd, endpoints: [http://e:2379], username: u, password_file: ` + empty + `}`, []string{"server.store.password_file: " + empty + " is empty"}},
		{"timeouts", `{kind: etcd, endpoints: [http://e:2379], request_timeout: 1ms, dial_timeout: soon, lease_ttl: 2500ms}`,
			[]string{"server.store.request_timeout", "server.store.dial_timeout", "server.store.lease_ttl"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  store: "+tc.store+"\n")
			s, err := resolveArgs(t, "--config", path)
			if err == nil {
				_, err = toServerConfig(s)
			}
			if err == nil {
				t.Fatal("the config was accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
