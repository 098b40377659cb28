package container

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/selector"
)

func TestNew_RejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"relative socket", Config{ContainerdSocket: "run/containerd.sock"}, "ContainerdSocket"},
		{"relative proc root", Config{ProcRoot: "proc"}, "ProcRoot"},
		{"negative cache size", Config{CacheSize: -1}, "CacheSize"},
		{"negative TTL", Config{CacheTTL: -time.Second}, "CacheTTL"},
		{"negative timeout", Config{LookupTimeout: -time.Second}, "LookupTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New err = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func TestSelectors_LeaveOutWhatCannotBeRepresented(t *testing.T) {
	a := newAttestor(t, Config{})
	info := Info{
		ID:          idA,
		ImageName:   "registry.example.com/app:1",
		ImageDigest: "sha256:" + strings.Repeat("0", 64),
		Labels: map[string]string{
			"app":       "billing",
			"multiline": "a\nb",
			"k:v":       "ambiguous",
			"":          "no key",
			"empty":     "",
		},
	}
	got := selector.NewSet(a.selectors(1, info)...).Strings()
	want := []string{
		"container:id:" + idA,
		"container:image_digest:sha256:" + strings.Repeat("0", 64),
		"container:image_name:registry.example.com/app:1",
		"container:label:app:billing",
		"container:label:empty:",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
}

func TestDigestRef(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name, image, digest, want string
	}{
		{"docker hub short name", "nginx:1.27", d, "index.docker.io/library/nginx@" + d},
		{"fully qualified containerd name", "docker.io/library/nginx:latest", d, "index.docker.io/library/nginx@" + d},
		{"private registry with port", "registry.lan:5000/team/app:v1", d, "registry.lan:5000/team/app@" + d},
		{"name already pinned by digest", "ghcr.io/acme/api@" + d, d, "ghcr.io/acme/api@" + d},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DigestRef(tt.image, tt.digest)
			if err != nil || got != tt.want {
				t.Errorf("DigestRef = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	for _, bad := range [][2]string{{"nginx", "sha512:" + strings.Repeat("a", 128)}, {"nginx", "sha256:xyz"}, {"UPPER/Case", d}} {
		if got, err := DigestRef(bad[0], bad[1]); err == nil {
			t.Errorf("DigestRef(%q, %q) = %q, want an error", bad[0], bad[1], got)
		}
	}
}
