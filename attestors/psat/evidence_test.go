package psat

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEvidence_ReadsTheTokenAsItIsAtEachAttestation(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "token")
	f.cluster.WriteToken(t, path, f.agentToken(t))
	ev := mustEvidence(t, clusterName, path)
	first := decode(t, ev)
	f.cluster.WriteToken(t, path, f.agentToken(t)) // the kubelet renews it
	second := decode(t, ev)
	if first.Cluster != clusterName || second.Cluster != clusterName {
		t.Errorf("clusters %q, %q, want %q", first.Cluster, second.Cluster, clusterName)
	}
	if first.Token == second.Token {
		t.Error("Evidence kept presenting the old token after the file was renewed")
	}
	if !ev.CanReattest() || ev.Type() != Type {
		t.Errorf("CanReattest = %v, Type = %q; want true, %q", ev.CanReattest(), ev.Type(), Type)
	}
	if _, err := ev.Respond(context.Background(), []byte("nonce")); err == nil {
		t.Error("Respond succeeded, want an error: there is no challenge")
	}
}

func decode(t *testing.T, ev *Evidence) payload {
	t.Helper()
	data, err := ev.Evidence(context.Background())
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	var p payload
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEvidence_FailsWithoutAUsableToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := map[string]struct {
		path string
		want string
	}{
		"missing file":  {filepath.Join(dir, "absent"), "no such file"},
		"empty file":    {write("empty", "\n"), "empty"},
		"not a JWT":     {write("garbage", "definitely not a token"), "not a compact JWT"},
		"too large":     {write("large", strings.Repeat("a", maxToken+1)), "longer than"},
		"cancelled ctx": {write("ok", "a.b.c"), "context canceled"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if name == "cancelled ctx" {
				cancel()
			}
			defer cancel()
			_, err := mustEvidence(t, clusterName, tt.path).Evidence(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one saying %q", err, tt.want)
			}
		})
	}
}

func TestNewEvidence_ChecksConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  EvidenceConfig
		want string
	}{
		{"no cluster", EvidenceConfig{}, "Cluster"},
		{"cluster with a slash", EvidenceConfig{Cluster: "a/b"}, "Cluster"},
		{"relative token path", EvidenceConfig{Cluster: "prod", TokenPath: "token"}, "absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewEvidence(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}
	ev, err := NewEvidence(EvidenceConfig{Cluster: "prod"})
	if err != nil {
		t.Fatalf("NewEvidence with defaults: %v", err)
	}
	if ev.tokenPath != DefaultTokenPath {
		t.Errorf("default token path = %q, want %q", ev.tokenPath, DefaultTokenPath)
	}
}
