package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/audit/auditlog"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/store/bolt"
)

// auditServer is a real admin API with the audit service, on a real audit
// log over a real bolt store.
type auditServer struct {
	socket string
	log    *auditlog.Log
	dir    string
}

func newAuditServer(t *testing.T, records int) *auditServer {
	t.Helper()
	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l, err := auditlog.New(auditlog.Config{Store: st, KeyFile: filepath.Join(dir, "audit", "checkpoint.key"), CheckpointEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	s := &auditServer{socket: filepath.Join(dir, "server.sock"), log: l, dir: dir}
	s.record(t, records)
	serveAdmin(t, dir, st, adminapi.Config{AuditLog: l})
	return s
}

// record appends n admin records, one batch each, and waits for them.
func (s *auditServer) record(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		s.log.Record(t.Context(), audit.Event{Actor: "unix:root(0)", Action: "admin.entry.create", Target: fmt.Sprintf("entry-%d", i),
			Outcome: audit.OutcomeSuccess, Reason: "created", Details: map[string]any{"spiffe_id": fmt.Sprintf("spiffe://example.org/w%d", i)}})
		if err := s.log.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *auditServer) run(t *testing.T, args ...string) result {
	t.Helper()
	return runCLI(t, nil, append([]string{"--socket", s.socket}, args...)...)
}

func (s *auditServer) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := s.run(t, args...)
	if r.code != 0 {
		t.Fatalf("nhidctl %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// writeFile writes data to name in the server's directory.
func (s *auditServer) writeFile(t *testing.T, name, data string) string {
	t.Helper()
	path := filepath.Join(s.dir, name)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAuditTail_ShowsTheNewestRecords(t *testing.T) {
	s := newAuditServer(t, 12)
	out := s.mustRun(t, "audit", "tail", "-n", "3")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "SEQ") || !strings.HasPrefix(lines[3], "13 ") || !strings.Contains(lines[3], "entry-11") {
		t.Fatalf("tail -n 3:\n%s", out)
	}
	out = s.mustRun(t, "audit", "tail", "-n", "2", "-o", "jsonl")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if l, err := audit.UnmarshalLine([]byte(line)); err != nil || l.Record == nil {
			t.Fatalf("tail -o jsonl line %q: %v", line, err)
		}
	}
	var arr []map[string]any
	if err := json.Unmarshal([]byte(s.mustRun(t, "audit", "tail", "-n", "2", "-o", "json")), &arr); err != nil || len(arr) != 2 || arr[1]["seq"] != 13.0 {
		t.Fatalf("tail -o json: %v %v", arr, err)
	}
	if r := s.run(t, "audit", "tail", "-n", "0"); r.code != 2 {
		t.Fatalf("tail -n 0: exit %d, want 2", r.code)
	}
}

// syncBuffer is an io.Writer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestAuditTail_FollowShowsNewRecordsUntilInterrupted(t *testing.T) {
	s := newAuditServer(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- executeCmd(ctx, newRootCmd(&stdout, &stderr), []string{"--socket", s.socket, "audit", "tail", "-f", "-o", "jsonl"}, &stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), `"seq":3`) {
		if time.Now().After(deadline) {
			t.Fatalf("tail -f did not show the existing records: %q %q", stdout.String(), stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.record(t, 1)
	for !strings.Contains(stdout.String(), `"seq":4`) {
		if time.Now().After(deadline) {
			t.Fatalf("tail -f did not show a new record: %q %q", stdout.String(), stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("tail -f ended with exit %d: %s", code, stderr.String())
	}
}

func TestAuditVerify_AnIntactLogVerifiesFromTheServerAndFromAnExport(t *testing.T) {
	s := newAuditServer(t, 25)
	out := s.mustRun(t, "audit", "verify")
	if !strings.Contains(out, "verified") || !strings.Contains(out, "26 records (seq 1 to 26)") || !strings.Contains(out, s.log.KeyID()) {
		t.Fatalf("verify:\n%s", out)
	}
	key := s.writeFile(t, "server.pem", s.mustRun(t, "audit", "head", "-o", "pem"))
	export := s.writeFile(t, "export.jsonl", s.mustRun(t, "audit", "export"))
	var v struct {
		Verified bool          `json:"verified"`
		Summary  audit.Summary `json:"summary"`
	}
	if err := json.Unmarshal([]byte(s.mustRun(t, "-o", "json", "audit", "verify", "--file", export, "--trusted-key", key)), &v); err != nil {
		t.Fatal(err)
	}
	if !v.Verified || v.Summary.Records != 26 || v.Summary.Checkpoints != 2 || v.Summary.Keys[0].Trust != audit.TrustPinned {
		t.Fatalf("verify --file --trusted-key: %+v", v)
	}
	// The JSON array export verifies too.
	arr := s.writeFile(t, "export.json", s.mustRun(t, "-o", "json", "audit", "export"))
	s.mustRun(t, "audit", "verify", "--file", arr, "--trusted-key", key)
}

func TestAuditVerify_ATamperedExportFailsNamingTheRecord(t *testing.T) {
	s := newAuditServer(t, 15)
	key := s.writeFile(t, "server.pem", s.mustRun(t, "audit", "head", "-o", "pem"))
	export := strings.Split(strings.TrimSpace(s.mustRun(t, "audit", "export")), "\n")
	tests := []struct {
		name   string
		tamper func(lines []string) []string
		want   string
	}{
		{"a changed record", func(l []string) []string {
			l[6] = strings.Replace(l[6], `"reason":"created"`, `"reason":"deleted"`, 1)
			return l
		}, "audit verify: record 7 was changed: hash mismatch"},
		{"a deleted record", func(l []string) []string { return append(l[:8:8], l[9:]...) }, "audit verify: record 9 is missing"},
		{"the last records cut with the head kept", func(l []string) []string { return append(l[:13:13], l[16:]...) }, "audit verify: record 14 is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := s.writeFile(t, "tampered.jsonl", strings.Join(tt.tamper(append([]string(nil), export...)), "\n"))
			r := s.run(t, "audit", "verify", "--file", path, "--trusted-key", key)
			if r.code != 1 || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stdout, "NOT VERIFIED") {
				t.Fatalf("verify of %s: exit %d\nstdout: %s\nstderr: %s\nwant exit 1 and %q", tt.name, r.code, r.stdout, r.stderr, tt.want)
			}
		})
	}
	other := newAuditServer(t, 1)
	otherKey := s.writeFile(t, "other.pem", other.mustRun(t, "audit", "head", "-o", "pem"))
	path := s.writeFile(t, "intact.jsonl", strings.Join(export, "\n"))
	if r := s.run(t, "audit", "verify", "--file", path, "--trusted-key", otherKey); r.code != 1 || !strings.Contains(r.stderr, "not trusted") {
		t.Fatalf("verify pinned to another server's key: exit %d: %s", r.code, r.stderr)
	}
}

func TestAuditExport_FiltersByTimeAndRefusesBadFlags(t *testing.T) {
	s := newAuditServer(t, 5)
	out := s.mustRun(t, "audit", "export", "--since", "1h")
	// A filtered export is an excerpt: no head line.
	if n := strings.Count(out, `"kind":"record"`); n != 6 || strings.Contains(out, `"kind":"head"`) {
		t.Fatalf("export --since 1h: %d records\n%s", n, out)
	}
	if out := s.mustRun(t, "audit", "export", "--until", "2000-01-01T00:00:00Z"); strings.Contains(out, `"kind"`) {
		t.Fatalf("export --until 2000: %s", out)
	}
	for _, args := range [][]string{
		{"audit", "export", "--since", "yesterday"},
		{"audit", "export", "--since", "1h", "--until", "2h"},
		{"-o", "table", "audit", "export"},
		{"audit", "verify", "--trusted-key", "/nonexistent.pem"},
	} {
		if r := s.run(t, args...); r.code != 2 {
			t.Errorf("nhidctl %v: exit %d (%s), want 2", args, r.code, r.stderr)
		}
	}
}
