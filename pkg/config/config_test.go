package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type testCA struct {
	KeyType string   `yaml:"key_type"`
	TTL     string   `yaml:"ttl"`
	Names   []string `yaml:"names"`
}

type testServer struct {
	Bind    string            `yaml:"bind"`
	Port    int               `yaml:"port"`
	UIDs    []uint32          `yaml:"uids"`
	Debug   bool              `yaml:"debug"`
	CA      *testCA           `yaml:"ca"`
	Labels  map[string]string `yaml:"labels"`
	Ignored string            `yaml:"-"`
}

type testFile struct {
	Server testServer `yaml:"server"`
}

func lines(s ...string) string { return strings.Join(s, "\n") }

func TestDecode_ValidDocumentFillsEveryField(t *testing.T) {
	doc := lines(
		"version: 1",
		"server:",
		"  bind: 127.0.0.1:8081",
		"  port: 8081",
		"  uids: [0, 1000]",
		"  debug: true",
		"  labels: {zone: a}",
		"  ca:",
		"    key_type: ec-p256",
		"    ttl: 24h",
		"    names: [a, b]",
	)
	var got testFile
	if err := Decode([]byte(doc), 1, &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := testFile{Server: testServer{
		Bind: "127.0.0.1:8081", Port: 8081, UIDs: []uint32{0, 1000}, Debug: true,
		Labels: map[string]string{"zone": "a"},
		CA:     &testCA{KeyType: "ec-p256", TTL: "24h", Names: []string{"a", "b"}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded config mismatch (-want +got):\n%s", diff)
	}
}

func TestDecode_ReportsEveryProblemWithItsPath(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{
			name: "unknown keys at several depths, in document order",
			doc: lines(
				"version: 1",
				"sever: x",
				"server:",
				"  ca:",
				"    key_tpye: ec-p256",
				"  bnd: x",
			),
			want: lines(
				"sever: unknown key",
				"server.ca.key_tpye: unknown key",
				"server.bnd: unknown key",
			),
		},
		{
			name: "type errors and unknown keys together",
			doc: lines(
				"version: 1",
				"server:",
				"  port: eighty",
				"  debug: maybe",
				"  uids: [1, -2]",
				"  extra: 1",
				"  ca: text",
			),
			want: lines(
				`server.port: must be an integer, got "eighty"`,
				`server.debug: must be a boolean (true or false), got "maybe"`,
				`server.uids[1]: must be a non-negative integer, got "-2"`,
				"server.extra: unknown key",
				`server.ca: must be a mapping, got "text"`,
			),
		},
		{
			name: "list where a scalar belongs and scalar where a list belongs",
			doc: lines(
				"version: 1",
				"server:",
				"  bind: [a]",
				"  uids: 5",
			),
			want: lines(
				"server.bind: must be a string, got a list",
				`server.uids: must be a list, got "5"`,
			),
		},
		{
			name: "duplicate key",
			doc: lines(
				"version: 1",
				"server:",
				"  port: 1",
				"  port: 2",
			),
			want: "server.port: duplicate key (first set on line 3)",
		},
		{
			name: "field tagged - is unknown",
			doc:  lines("version: 1", "server:", "  ignored: x"),
			want: "server.ignored: unknown key",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got testFile
			err := Decode([]byte(tt.doc), 1, &got)
			if err == nil {
				t.Fatal("Decode succeeded, want an error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(testFile{}, got); diff != "" {
				t.Errorf("target changed on error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecode_VersionIsRequiredAndChecked(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"missing", "server: {}", `version: missing; the file must start with "version: 1" (supported versions: 1)`},
		{"empty document", "", `version: missing; the file must start with "version: 1" (supported versions: 1)`},
		{"other version", "version: 2\nserver: {}", "version: 2 is not supported (supported versions: 1)"},
		{"not a number", "version: one", `version: "one" is not a version number (supported versions: 1)`},
		{"not a mapping", "- a\n- b", "the config must be a mapping of keys to values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got testFile
			err := Decode([]byte(tt.doc), 1, &got)
			if err == nil {
				t.Fatal("Decode succeeded, want an error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecode_RejectsSyntaxErrorsAndSecondDocuments(t *testing.T) {
	for name, doc := range map[string]string{
		"syntax":          "version: 1\nserver: [",
		"second document": "version: 1\n---\nversion: 1\n",
	} {
		t.Run(name, func(t *testing.T) {
			var got testFile
			err := Decode([]byte(doc), 1, &got)
			if err == nil || !strings.HasPrefix(err.Error(), "parse config: ") {
				t.Errorf("Decode error = %v, want a parse error", err)
			}
		})
	}
}

func TestDecode_KeepsDefaultsForAbsentAndEmptyValues(t *testing.T) {
	got := testFile{Server: testServer{Bind: "default", Port: 7}}
	if err := Decode([]byte("version: 1\nserver:\n  port:\n"), 1, &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := testFile{Server: testServer{Bind: "default", Port: 7}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults lost (-want +got):\n%s", diff)
	}
}

func TestDecode_FollowsAnchorsAndMergeKeys(t *testing.T) {
	doc := lines(
		"version: 1",
		"base: &base {key_type: rsa-2048, ttl: 1h}",
		"server:",
		"  ca:",
		"    <<: *base",
		"    bogus: 1",
	)
	type withBase struct {
		Base   testCA     `yaml:"base"`
		Server testServer `yaml:"server"`
	}
	var got withBase
	err := Decode([]byte(doc), 1, &got)
	if diff := cmp.Diff("server.ca.bogus: unknown key", errString(err)); diff != "" {
		t.Errorf("error mismatch (-want +got):\n%s", diff)
	}
}

func TestDecode_StoresVersionWhenTheTargetHasAField(t *testing.T) {
	var got struct {
		Version int `yaml:"version"`
	}
	if err := Decode([]byte("version: 3"), 3, &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got.Version != 3 {
		t.Errorf("Version = %d, want 3", got.Version)
	}
}

func TestDecode_RejectsNonStructTargets(t *testing.T) {
	var m map[string]any
	if err := Decode([]byte("version: 1"), 1, &m); err == nil {
		t.Error("Decode into a map succeeded, want an error")
	}
	if err := Decode([]byte("version: 1"), 1, testFile{}); err == nil {
		t.Error("Decode into a non-pointer succeeded, want an error")
	}
}

func TestLoad_WrapsErrorsWithThePath(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, good, "version: 1\nserver: {port: 9}\n")
	writeFile(t, bad, "version: 1\nserver: {prot: 9}\n")

	var got testFile
	if err := Load(good, 1, &got); err != nil {
		t.Fatalf("Load(good): %v", err)
	}
	if got.Server.Port != 9 {
		t.Errorf("Port = %d, want 9", got.Server.Port)
	}
	err := Load(bad, 1, &got)
	if diff := cmp.Diff("config "+bad+":\nserver.prot: unknown key", errString(err)); diff != "" {
		t.Errorf("Load(bad) error mismatch (-want +got):\n%s", diff)
	}
	missing := filepath.Join(dir, "missing.yaml")
	if err := Load(missing, 1, &got); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load(missing) error = %v, want one naming %s", err, missing)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "", want: 0},
		{in: "90s", want: 90 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "0s", want: 0},
		{in: "ten", wantErr: `x.ttl: "ten" is not a duration (use a number with a unit: 90s, 10m, 1h)`},
		{in: "10", wantErr: `x.ttl: "10" is not a duration (use a number with a unit: 90s, 10m, 1h)`},
		{in: "-5m", wantErr: "x.ttl: must not be negative, got -5m"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var errs Errors
			got := Duration(&errs, "x.ttl", tt.in)
			if got != tt.want {
				t.Errorf("Duration(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if diff := cmp.Diff(tt.wantErr, errString(errs.Err())); diff != "" {
				t.Errorf("errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	var errs Errors
	if errs.Err() != nil {
		t.Fatalf("empty Errors.Err() = %v, want nil", errs.Err())
	}
	errs.Addf("b.late", "added first without position")
	errs.addAt(7, 3, "a.second", "line %d", 7)
	errs.addAt(2, 1, "a.first", "line %d", 2)
	errs.Addf("", "no path")
	want := lines("a.first: line 2", "a.second: line 7", "b.late: added first without position", "no path")
	if diff := cmp.Diff(want, errString(errs.Err())); diff != "" {
		t.Errorf("Err() mismatch (-want +got):\n%s", diff)
	}
	if errs.Len() != 4 {
		t.Errorf("Len() = %d, want 4", errs.Len())
	}
}

func TestJoinAndIndex(t *testing.T) {
	if got := Join("", "server", "ca"); got != "server.ca" {
		t.Errorf("Join = %q", got)
	}
	if got := Index(Join("admin", "allowed_uids"), 2); got != "admin.allowed_uids[2]" {
		t.Errorf("Index = %q", got)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
