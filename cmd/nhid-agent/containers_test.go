package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
)

func checked(t *testing.T, yaml string) (resolved, error) {
	t.Helper()
	s, err := settingsFor(t, "--config", writeFile(t, "agent.yaml", yaml))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return s.check(func(string) string { return "" })
}

func TestCheck_WithoutWorkloadAttestorsSectionsContainerAndSigstoreAreOff(t *testing.T) {
	r, err := checked(t, "version: 1\nagent:\n  server: s:1\n")
	if err != nil {
		t.Fatal(err)
	}
	if r.container != nil || r.sigstore != nil {
		t.Errorf("container = %+v, sigstore = %+v; want both off", r.container, r.sigstore)
	}
}

func TestCheck_WorkloadAttestorsSections(t *testing.T) {
	key := sigstoretest.NewKey(t)
	keyFile := writeFile(t, "cosign.pub", string(key.PEM))
	root := sigstoretest.NewSigstore(t).TrustedRoot(t)
	rootFile := writeFile(t, "trusted_root.json", string(root))
	r, err := checked(t, `version: 1
agent:
  server: s:1
  workload_attestors:
    container:
      containerd_socket: /run/k3s/containerd/containerd.sock
      namespace: k8s.io
      cache_ttl: 30s
      cache_size: 100
    sigstore:
      public_keys:
        - {name: release, file: `+keyFile+`}
      trusted_root: `+rootFile+`
      identities:
        - subject_regexp: https://github\.com/nhid/.*
          issuer: https://token.actions.githubusercontent.com
      cache_ttl: 5m
      insecure_registries: [registry.lan:5000]
`)
	if err != nil {
		t.Fatal(err)
	}
	wantC := &container.Config{ContainerdSocket: "/run/k3s/containerd/containerd.sock", Namespace: "k8s.io", CacheTTL: 30 * time.Second, CacheSize: 100}
	if diff := cmp.Diff(wantC, r.container); diff != "" {
		t.Errorf("container config (-want +got):\n%s", diff)
	}
	wantS := &sigstore.Config{
		PublicKeys:         []sigstore.PublicKey{{Name: "release", PEM: key.PEM}},
		TrustedRoot:        root,
		Identities:         []sigstore.Identity{{SubjectRegexp: `https://github\.com/nhid/.*`, Issuer: "https://token.actions.githubusercontent.com"}},
		CacheTTL:           5 * time.Minute,
		InsecureRegistries: []string{"registry.lan:5000"},
	}
	if diff := cmp.Diff(wantS, r.sigstore); diff != "" {
		t.Errorf("sigstore config (-want +got):\n%s", diff)
	}
}

func TestCheck_WorkloadAttestorsErrorsNameTheirSetting(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"sigstore alone", "    sigstore:\n      public_keys: [{name: k, file: /nonexistent/k.pub}]\n",
			[]string{"agent.workload_attestors.sigstore: needs the container section", "agent.workload_attestors.sigstore.public_keys[0].file"}},
		{"sigstore with nothing to verify", "    container: {}\n    sigstore: {cache_ttl: 1m}\n",
			[]string{"agent.workload_attestors.sigstore: set public_keys"}},
		{"key without name or file", "    container: {}\n    sigstore:\n      public_keys: [{}]\n",
			[]string{"public_keys[0].name: must be set", "public_keys[0].file: must be set"}},
		{"relative socket and bad TTL", "    container: {containerd_socket: run/c.sock, cache_ttl: soon}\n",
			[]string{"agent.workload_attestors.container.containerd_socket", "agent.workload_attestors.container.cache_ttl"}},
		{"unknown key", "    container: {socket: /run/c.sock}\n", []string{"socket"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := settingsFor(t, "--config", writeFile(t, "agent.yaml", "version: 1\nagent:\n  server: s:1\n  workload_attestors:\n"+tt.body))
			if err == nil {
				_, err = s.check(func(string) string { return "" })
			}
			if err == nil {
				t.Fatal("no error, want one")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}
