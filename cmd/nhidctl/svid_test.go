package main

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestSVIDFetch_Outputs(t *testing.T) {
	w := newWorkloadServer(t)
	sock := "unix://" + w.socket

	table := runCLI(t, nil, "svid", "fetch", "--socket", sock)
	if table.code != 0 {
		t.Fatalf("exit %d: %s", table.code, table.stderr)
	}
	for _, want := range []string{"SPIFFE ID:", workloadID, "Hint:", "internal", "Serial:", "abc123", "Entry:", "entry-1", "Purpose:", "reconciles invoices", "Owner:", "ana@example.org", "Bundle:", "example.org, 1 X.509 authorities", "Expires:"} {
		if !strings.Contains(table.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, table.stdout)
		}
	}

	js := runCLI(t, nil, "svid", "fetch", "--socket", w.socket, "-o", "json")
	if js.code != 0 {
		t.Fatalf("exit %d: %s", js.code, js.stderr)
	}
	var doc fetchJSON
	if err := json.Unmarshal([]byte(js.stdout), &doc); err != nil {
		t.Fatalf("-o json output: %v\n%s", err, js.stdout)
	}
	if len(doc.SVIDs) != 1 || doc.SVIDs[0].SpiffeID != workloadID || doc.SVIDs[0].Serial != "abc123" ||
		doc.SVIDs[0].Hint != "internal" || doc.SVIDs[0].EntryID != "entry-1" || doc.SVIDs[0].Purpose != "reconciles invoices" ||
		doc.SVIDs[0].Owner != "ana@example.org" || len(doc.Bundles) != 1 || doc.Bundles[0].TrustDomain != "example.org" {
		t.Errorf("json = %+v", doc)
	}

	pemOut := runCLI(t, nil, "-o", "pem", "svid", "fetch", "--socket", sock)
	if pemOut.code != 0 {
		t.Fatalf("exit %d: %s", pemOut.code, pemOut.stderr)
	}
	var got [][]byte
	rest := []byte(pemOut.stdout)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		got = append(got, b.Bytes)
	}
	if diff := cmp.Diff([][]byte{w.leaf.Raw, w.ca.Raw}, got); diff != "" {
		t.Errorf("pem blocks (-want +got):\n%s", diff)
	}
	for _, out := range []string{table.stdout, js.stdout, pemOut.stdout} {
		if strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("output holds a private key:\n%s", out)
		}
	}
}

func TestSVIDFetch_WritesFilesWithAPrivateKey(t *testing.T) {
	w := newWorkloadServer(t)
	dir := filepath.Join(t.TempDir(), "out")
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "unix://"+w.socket)
	r := runCLI(t, nil, "svid", "fetch", "--write", dir)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	svid, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"))
	if err != nil {
		t.Fatalf("written SVID does not load: %v", err)
	}
	if svid.ID.String() != workloadID || !svid.Certificates[0].Equal(w.leaf) {
		t.Errorf("written SVID = %s", svid.ID)
	}
	modes := map[string]os.FileMode{"svid.pem": 0o644, "svid.key": 0o600, "bundle.pem": 0o644}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	bundle, err := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(bundle); b == nil || string(b.Bytes) != string(w.ca.Raw) {
		t.Error("bundle.pem is not the CA")
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 3 {
		t.Errorf("directory holds %d files (%v), want exactly 3 (no temporary files left)", len(entries), err)
	}
}

func TestSVIDFetch_Errors(t *testing.T) {
	w := newWorkloadServer(t)
	denied := newWorkloadServer(t)
	denied.deny = true
	missing := filepath.Join(shortTempDir(t), "none.sock")
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no identity", []string{"svid", "fetch", "--socket", denied.socket}, 1, "no identity for this process"},
		{"agent not running", []string{"svid", "fetch", "--socket", missing}, 1,
			"cannot reach the Workload API at unix://" + missing + ": is nhid-agent running? set --socket or SPIFFE_ENDPOINT_SOCKET"},
		{"bad address", []string{"svid", "fetch", "--socket", "http://x"}, 2, "Workload API socket"},
		{"bad output", []string{"svid", "fetch", "--socket", w.socket, "-o", "yaml"}, 2, `"yaml" is not one of table, json, pem`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, nil, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, tt.code, tt.msg)
			}
		})
	}
}

func TestSVIDValidateJWT(t *testing.T) {
	w := newWorkloadServer(t)
	token := w.jwtFor(t, "payments")

	r := runCLI(t, nil, "svid", "validate-jwt", "--socket", w.socket, "--audience", "payments", "--token", token)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"SPIFFE ID:", workloadID, "Audience:", "payments", `"purpose":"reconciles invoices"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}

	r = runCLI(t, []byte(token+"\n"), "-o", "json", "svid", "validate-jwt", "--socket", w.socket, "--audience", "payments", "--token", "-")
	if r.code != 0 {
		t.Fatalf("token from stdin: exit %d: %s", r.code, r.stderr)
	}
	var doc struct {
		SpiffeID string         `json:"spiffe_id"`
		Claims   map[string]any `json:"claims"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc.SpiffeID != workloadID || doc.Claims["sub"] != workloadID {
		t.Errorf("json = %s (%v)", r.stdout, err)
	}

	r = runCLI(t, nil, "svid", "validate-jwt", "--socket", w.socket, "--audience", "other", "--token", token)
	if r.code != 1 || !strings.Contains(r.stderr, `audience "other" not in token`) || strings.Contains(r.stderr, "rpc error") {
		t.Errorf("wrong audience: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := runCLI(t, nil, "svid", "validate-jwt", "--socket", w.socket, "--token", token); r.code != 2 {
		t.Errorf("missing --audience: exit %d, want 2", r.code)
	}
}
