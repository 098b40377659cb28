package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

const agentA = "spiffe://example.org/nhid/agent/join_token/aaaa"

func decode[M proto.Message](t *testing.T, out string, m M) M {
	t.Helper()
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("output is not %T JSON: %v\n%s", m, err, out)
	}
	return m
}

func TestEntryCreate_FromFlags(t *testing.T) {
	s := newServer(t)
	out := s.mustRun(t, "-o", "json", "entry", "create",
		"--spiffe-id", "spiffe://example.org/billing",
		"--parent-id", agentA,
		"--selector", "unix:uid:1000", "--selector", "unix:path:/opt/a,b",
		"--purpose", "reconciles invoices", "--owner", "alice@example.org",
		"--scope", "invoices:write", "--scope", "invoices:read",
		"--x509-ttl", "1h", "--jwt-ttl", "90s",
		"--dns-name", "billing.example.org", "--hint", "internal", "--admin",
		"--federates-with", "z.test", "--federates-with", "partner.test",
		"--expires-at", "2031-02-03T04:05:06Z")
	got := decode(t, out, &adminv1.CreateEntryResponse{}).GetEntry()
	want := &typesv1.Entry{
		SpiffeId:      "spiffe://example.org/billing",
		ParentId:      agentA,
		Selectors:     []string{"unix:path:/opt/a,b", "unix:uid:1000"},
		Purpose:       "reconciles invoices",
		Owner:         "alice@example.org",
		ScopeCeiling:  []string{"invoices:read", "invoices:write"},
		X509Ttl:       3600,
		JwtTtl:        90,
		DnsNames:      []string{"billing.example.org"},
		FederatesWith: []string{"partner.test", "z.test"},
		Hint:          "internal",
		Admin:         true,
		ExpiresAt:     time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC).Unix(),
	}
	if diff := cmp.Diff(want, got, protocmp.Transform(),
		protocmp.IgnoreFields(&typesv1.Entry{}, "id", "revision", "created_at")); diff != "" {
		t.Errorf("created entry (-want +got):\n%s", diff)
	}

	table := s.mustRun(t, "entry", "show", got.GetId())
	for _, want := range []string{"SPIFFE ID:", "spiffe://example.org/billing", "X.509-SVID TTL:", "1h0m0s", "2031-02-03T04:05:06Z",
		"Federates with:", "partner.test,z.test"} {
		if !strings.Contains(table, want) {
			t.Errorf("entry show lacks %q:\n%s", want, table)
		}
	}
}

func TestEntryCreate_BadFlagsAreUsageErrors(t *testing.T) {
	s := newServer(t)
	base := []string{"entry", "create", "--spiffe-id", "spiffe://example.org/x", "--parent-id", agentA, "--selector", "unix:uid:1"}
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"missing required flags", []string{"entry", "create", "--spiffe-id", "spiffe://example.org/x"}, "missing --parent-id, --selector"},
		{"fractional ttl", append(base, "--x509-ttl", "1.5s"), "--x509-ttl 1.5s is not a whole number of seconds"},
		{"negative ttl", append(base, "--jwt-ttl", "-1m"), "--jwt-ttl -1m0s is negative"},
		{"unparsable duration", append(base, "--jwt-ttl", "soon"), "invalid argument"},
		{"bad expiry", append(base, "--expires-at", "tomorrow"), "RFC 3339"},
		{"file and flags", append(base, "-f", "x.json"), "either -f or entry flags"},
		{"unknown output", append([]string{"-o", "yaml"}, base...), `"yaml" is not one of table, json`},
		{"extra argument", append(base, "extra"), "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.run(t, tt.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, tt.msg)
			}
		})
	}
	if n, err := s.store.CountEntries(t.Context()); err != nil || n != 0 {
		t.Errorf("CountEntries = %d, %v; want nothing stored", n, err)
	}
}

func TestEntryCreate_ServerRejectionPrintsTheServerMessage(t *testing.T) {
	s := newServer(t)
	r := s.run(t, "entry", "create", "--spiffe-id", "spiffe://other.org/x", "--parent-id", agentA, "--selector", "nocolon")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", r.code, r.stderr)
	}
	for _, want := range []string{"entry.spiffe_id", "entry.selectors[0]"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "rpc error") || strings.Contains(r.stderr, "code =") {
		t.Errorf("stderr shows gRPC framing: %s", r.stderr)
	}
}

// seedEntries creates n entries through the CLI and returns their listing.
func seedEntries(t *testing.T, s *server, n int) string {
	t.Helper()
	for i := 0; i < n; i++ {
		s.mustRun(t, "entry", "create", "--spiffe-id", fmt.Sprintf("spiffe://example.org/w%d", i),
			"--parent-id", agentA, "--selector", fmt.Sprintf("unix:uid:%d", 1000+i),
			"--purpose", "worker", "--owner", "ops@example.org", "--scope", "jobs:run", "--x509-ttl", "2h")
	}
	return s.mustRun(t, "entry", "list", "-o", "json")
}

func TestEntryList_JSONHasTheDocumentedShape(t *testing.T) {
	s := newServer(t)
	out := seedEntries(t, s, 1)
	var doc struct {
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Entries) != 1 {
		t.Fatalf("entry list -o json = %s (%v), want {\"entries\":[one]}", out, err)
	}
	e := doc.Entries[0]
	for key, want := range map[string]any{
		"spiffe_id": "spiffe://example.org/w0",
		"parent_id": agentA,
		"selectors": []any{"unix:uid:1000"},
		"purpose":   "worker",
		"owner":     "ops@example.org",
	} {
		if diff := cmp.Diff(want, e[key]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", key, diff)
		}
	}
	if id, _ := e["id"].(string); id == "" {
		t.Errorf("entry has no id: %v", e)
	}

	empty := newServer(t)
	if out := empty.mustRun(t, "entry", "list", "-o", "json"); !strings.Contains(out, `"entries": []`) {
		t.Errorf("empty listing = %s, want an empty entries array", out)
	}
	if out := empty.mustRun(t, "entry", "list"); strings.TrimSpace(out) != "no entries" {
		t.Errorf("empty table = %q, want \"no entries\"", out)
	}
}

func TestEntryList_RoundTripsThroughCreateFile(t *testing.T) {
	src := newServer(t)
	listing := seedEntries(t, src, 3)
	want := decode(t, listing, &adminv1.ListEntriesResponse{}).GetEntries()

	var doc any
	if err := yaml.Unmarshal([]byte(listing), &doc); err != nil {
		t.Fatal(err)
	}
	yamlListing, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file string
		data       []byte
	}{
		{"json", "entries.json", []byte(listing)},
		{"yaml", "entries.yaml", yamlListing},
		{"yaml without extension", "entries", yamlListing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := newServer(t)
			path := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			out := dst.mustRun(t, "entry", "create", "-f", path)
			if !strings.Contains(out, "created 3 of 3 entries") {
				t.Errorf("output = %q", out)
			}
			got := decode(t, dst.mustRun(t, "entry", "list", "-o", "json"), &adminv1.ListEntriesResponse{}).GetEntries()
			if diff := cmp.Diff(want, got, protocmp.Transform(),
				protocmp.IgnoreFields(&typesv1.Entry{}, "revision", "created_at")); diff != "" {
				t.Errorf("entries after the round trip (-source +copy):\n%s", diff)
			}
		})
	}
	t.Run("stdin", func(t *testing.T) {
		dst := newServer(t)
		r := runCLI(t, []byte(listing), "--socket", dst.socket, "-o", "json", "entry", "create", "-f", "-")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if got := decode(t, r.stdout, &adminv1.ListEntriesResponse{}).GetEntries(); len(got) != 3 {
			t.Errorf("created %d entries from stdin, want 3", len(got))
		}
	})
}

func TestEntryCreateFile_ReportsEachFailureAndExitsNonZero(t *testing.T) {
	s := newServer(t)
	file := filepath.Join(t.TempDir(), "entries.yaml")
	content := `entries:
  - spiffe_id: spiffe://example.org/good
    parent_id: ` + agentA + `
    selectors: ["unix:uid:1"]
  - spiffe_id: spiffe://example.org/bad
    parent_id: ` + agentA + `
    selectors: ["nocolon"]
    x509_ttl: 5
`
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	r := s.run(t, "entry", "create", "-f", file)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", r.code, r.stderr)
	}
	for _, want := range []string{"entries[1] spiffe://example.org/bad:", "entry.selectors[0]", "entry.x509_ttl", "1 of 2 entries were not created"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, "created 1 of 2 entries") {
		t.Errorf("stdout = %q", r.stdout)
	}
	if n, err := s.store.CountEntries(t.Context()); err != nil || n != 1 {
		t.Errorf("CountEntries = %d, %v; want the valid entry stored", n, err)
	}
}

func TestEntryCreateFile_SendsBatchesOfAtMost1000(t *testing.T) {
	s := newServer(t)
	list := &adminv1.ListEntriesResponse{}
	for i := 0; i < 2500; i++ {
		list.Entries = append(list.Entries, &typesv1.Entry{
			SpiffeId:  fmt.Sprintf("spiffe://example.org/w/%d", i),
			ParentId:  agentA,
			Selectors: []string{fmt.Sprintf("unix:uid:%d", i)},
		})
	}
	data, err := protojson.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := s.mustRun(t, "entry", "create", "-f", file); !strings.Contains(out, "created 2500 of 2500") {
		t.Errorf("output = %q", out)
	}
	if n := s.store.batches.Load(); n != 3 {
		t.Errorf("%d batch calls, want 3", n)
	}
	got := decode(t, s.mustRun(t, "entry", "list", "-o", "json"), &adminv1.ListEntriesResponse{})
	if len(got.GetEntries()) != 2500 {
		t.Errorf("entry list found %d entries across pages, want 2500", len(got.GetEntries()))
	}
}

func TestEntryCreateFile_BadFiles(t *testing.T) {
	s := newServer(t)
	dir := t.TempDir()
	tests := []struct {
		name, file, content, msg string
	}{
		{"unknown field", "a.json", `{"entries":[{"spiffe_idd":"x"}]}`, "spiffe_idd"},
		{"not the listing shape", "b.yaml", "- a\n- b\n", "shape of 'entry list -o json'"},
		{"broken yaml", "c.yaml", "entries: [\n", "not valid YAML"},
		{"no entries", "d.json", `{"entries":[]}`, "holds no entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			r := s.run(t, "entry", "create", "-f", path)
			if r.code != 1 || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, tt.msg)
			}
		})
	}
	r := s.run(t, "entry", "create", "-f", filepath.Join(dir, "missing.json"))
	if r.code != 1 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestEntryUpdate_ChangesOnlyTheGivenFields(t *testing.T) {
	s := newServer(t)
	orig := decode(t, seedEntries(t, s, 1), &adminv1.ListEntriesResponse{}).GetEntries()[0]
	out := s.mustRun(t, "-o", "json", "entry", "update", orig.GetId(),
		"--purpose", "new purpose", "--jwt-ttl", "10m", "--scope", "", "--expires-at", "2032-01-01T00:00:00Z")
	got := decode(t, out, &adminv1.UpdateEntryResponse{}).GetEntry()
	want := proto.Clone(orig).(*typesv1.Entry)
	want.Purpose = "new purpose"
	want.JwtTtl = 600
	want.ScopeCeiling = nil
	want.ExpiresAt = time.Date(2032, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&typesv1.Entry{}, "revision")); diff != "" {
		t.Errorf("updated entry (-want +got):\n%s", diff)
	}
	if got.GetRevision() <= orig.GetRevision() {
		t.Errorf("revision %d did not move past %d", got.GetRevision(), orig.GetRevision())
	}

	if r := s.run(t, "entry", "update", orig.GetId()); r.code != 2 || !strings.Contains(r.stderr, "nothing to update") {
		t.Errorf("update without flags: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := s.run(t, "entry", "update", "no-such-id", "--purpose", "x"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("update of an unknown id: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := s.run(t, "entry", "update", orig.GetId(), "--x509-ttl", "1s"); r.code != 1 || !strings.Contains(r.stderr, "entry.x509_ttl") {
		t.Errorf("update with a bad ttl: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestEntry_FederatesWithInJSONUpdatesAndFiles(t *testing.T) {
	s := newServer(t)
	out := s.mustRun(t, "-o", "json", "entry", "create", "--spiffe-id", "spiffe://example.org/fed",
		"--parent-id", agentA, "--selector", "unix:uid:1", "--federates-with", "partner.test")
	var doc struct {
		Entry map[string]any `json:"entry"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]any{"partner.test"}, doc.Entry["federates_with"]); diff != "" {
		t.Errorf("federates_with in -o json (-want +got):\n%s\n%s", diff, out)
	}
	id, _ := doc.Entry["id"].(string)

	// Like the other list flags, --federates-with replaces the list when
	// given, and a single empty value clears it.
	update := func(args ...string) *typesv1.Entry {
		t.Helper()
		out := s.mustRun(t, append([]string{"-o", "json", "entry", "update", id}, args...)...)
		return decode(t, out, &adminv1.UpdateEntryResponse{}).GetEntry()
	}
	if got := update("--federates-with", "other.test", "--federates-with", "b.test").GetFederatesWith(); !cmp.Equal(got, []string{"b.test", "other.test"}) {
		t.Errorf("federates_with after an update = %v, want [b.test other.test]", got)
	}
	if got := update("--purpose", "kept").GetFederatesWith(); !cmp.Equal(got, []string{"b.test", "other.test"}) {
		t.Errorf("federates_with after updating another field = %v, want it kept", got)
	}
	if got := update("--federates-with", "").GetFederatesWith(); len(got) != 0 {
		t.Errorf("federates_with after --federates-with \"\" = %v, want none", got)
	}
	if table := s.mustRun(t, "entry", "show", id); !strings.Contains(table, "Federates with:") {
		t.Errorf("entry show lacks the Federates with line:\n%s", table)
	}

	for _, bad := range []struct{ value, msg string }{
		{"example.org", "entry.federates_with[0]: \"example.org\" is the server's own trust domain"},
		{"spiffe://partner.test", "give the trust domain name alone"},
		{"Partner.test", "entry.federates_with[0]"},
	} {
		r := s.run(t, "entry", "update", id, "--federates-with", bad.value)
		if r.code != 1 || !strings.Contains(r.stderr, bad.msg) {
			t.Errorf("--federates-with %q: exit %d, stderr %q; want exit 1 and %q", bad.value, r.code, r.stderr, bad.msg)
		}
	}

	file := filepath.Join(t.TempDir(), "entries.yaml")
	content := `entries:
  - spiffe_id: spiffe://example.org/from-file
    parent_id: ` + agentA + `
    selectors: ["unix:uid:2"]
    federates_with: ["partner.test"]
`
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	created := decode(t, s.mustRun(t, "-o", "json", "entry", "create", "-f", file), &adminv1.ListEntriesResponse{}).GetEntries()
	if len(created) != 1 || !cmp.Equal(created[0].GetFederatesWith(), []string{"partner.test"}) {
		t.Errorf("entry created from a file = %v, want federates_with [partner.test]", created)
	}
}

func TestEntryDelete(t *testing.T) {
	s := newServer(t)
	e := decode(t, seedEntries(t, s, 2), &adminv1.ListEntriesResponse{}).GetEntries()[0]
	out := s.mustRun(t, "entry", "delete", e.GetId())
	if want := fmt.Sprintf("deleted entry %s (%s)", e.GetId(), e.GetSpiffeId()); strings.TrimSpace(out) != want {
		t.Errorf("output = %q, want %q", out, want)
	}
	r := s.run(t, "entry", "show", e.GetId())
	if r.code != 1 || !strings.Contains(r.stderr, e.GetId()) || !strings.Contains(r.stderr, "not found") {
		t.Errorf("show after delete: exit %d, stderr %q", r.code, r.stderr)
	}
	rest := decode(t, s.mustRun(t, "entry", "list", "-o", "json"), &adminv1.ListEntriesResponse{}).GetEntries()
	if len(rest) != 1 || rest[0].GetId() == e.GetId() {
		t.Errorf("entries left = %v, want only the other one", rest)
	}
	if r := s.run(t, "entry", "delete"); r.code != 2 {
		t.Errorf("delete without an id: exit %d, want 2", r.code)
	}
}

func TestEntryList_Filters(t *testing.T) {
	s := newServer(t)
	seedEntries(t, s, 3)
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"--spiffe-id", "spiffe://example.org/w1"}, 1},
		{[]string{"--parent-id", agentA}, 3},
		{[]string{"--selector", "unix:uid:1002"}, 1},
		{[]string{"--parent-id", "spiffe://example.org/nhid/agent/x/y"}, 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got := decode(t, s.mustRun(t, append([]string{"entry", "list", "-o", "json"}, tt.args...)...), &adminv1.ListEntriesResponse{})
			if len(got.GetEntries()) != tt.want {
				t.Errorf("%d entries, want %d", len(got.GetEntries()), tt.want)
			}
		})
	}
	table := s.mustRun(t, "entry", "list")
	if !strings.HasPrefix(table, "ID") || !strings.Contains(table, "spiffe://example.org/w2") {
		t.Errorf("table = %q", table)
	}
}

func TestUnknownCommandIsAUsageError(t *testing.T) {
	r := runCLI(t, nil, "entri", "list")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown command "entri"`) {
		t.Errorf("exit %d, stderr %q; want exit 2 naming the command", r.code, r.stderr)
	}
}
