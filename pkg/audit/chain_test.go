package audit_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/audit"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// The test vectors of docs/audit.md: an independent implementation must
// compute the same hashes.
func TestRecordHash_MatchesTheDocumentedVectors(t *testing.T) {
	r1 := &typesv1.AuditRecord{
		Seq: 1, Time: 1767225600000000000, Actor: "unix:alice(1000)", Action: "admin.entry.create",
		Target: "0195f3a0-0000-7000-8000-000000000001", Outcome: "success",
		Details: `{"spiffe_id":"spiffe://example.org/db"}`, PrevHash: audit.ZeroHash(), Server: "spiffe://example.org/nhid/server",
	}
	h1 := audit.RecordHash(r1)
	if got, want := hex.EncodeToString(h1), "d67219cf12c472119d76e4aef27efa6dfc2fe656781a11403df8810a8c3797eb"; got != want {
		t.Fatalf("hash of record 1 = %s, want %s", got, want)
	}
	r2 := &typesv1.AuditRecord{
		Seq: 2, Time: 1767225601500000000, Actor: "spiffe://example.org/agent", OnBehalfOf: "bob@example.org",
		Action: "grant.decide", Target: "g-1", Outcome: "denied", Reason: "outside business hours",
		Details: `{"rule":"office-hours"}`, PrevHash: h1, Server: "spiffe://example.org/nhid/server",
	}
	if got, want := hex.EncodeToString(audit.RecordHash(r2)), "990b904f5ef0c1872d1e2cdfcb0ecc11cfd2114678f89c297166b9932feb055e"; got != want {
		t.Fatalf("hash of record 2 = %s, want %s", got, want)
	}
}

func TestRecordHash_EveryFieldButHashCounts(t *testing.T) {
	base := newLog(t).add(1).records[0]
	baseHash := audit.RecordHash(base)
	changes := map[string]func(r *typesv1.AuditRecord){
		"seq": func(r *typesv1.AuditRecord) { r.Seq++ }, "time": func(r *typesv1.AuditRecord) { r.Time++ },
		"actor": func(r *typesv1.AuditRecord) { r.Actor += "x" }, "on_behalf_of": func(r *typesv1.AuditRecord) { r.OnBehalfOf += "x" },
		"action": func(r *typesv1.AuditRecord) { r.Action += "x" }, "target": func(r *typesv1.AuditRecord) { r.Target += "x" },
		"outcome": func(r *typesv1.AuditRecord) { r.Outcome += "x" }, "reason": func(r *typesv1.AuditRecord) { r.Reason += "x" },
		"details": func(r *typesv1.AuditRecord) { r.Details += " " }, "prev_hash": func(r *typesv1.AuditRecord) { r.PrevHash[0] ^= 1 },
		"server": func(r *typesv1.AuditRecord) { r.Server += "x" },
		// Length prefixes keep field boundaries: moving a byte from one
		// field to the next changes the hash.
		"a byte moved between fields": func(r *typesv1.AuditRecord) {
			r.Actor, r.OnBehalfOf = r.Actor[:len(r.Actor)-1], r.Actor[len(r.Actor)-1:]+r.OnBehalfOf
		},
	}
	for name, change := range changes {
		r := proto.Clone(base).(*typesv1.AuditRecord)
		change(r)
		if bytes.Equal(audit.RecordHash(r), baseHash) {
			t.Errorf("changing %s left the hash as it was", name)
		}
	}
	r := proto.Clone(base).(*typesv1.AuditRecord)
	r.Hash = []byte("anything")
	if !bytes.Equal(audit.RecordHash(r), baseHash) {
		t.Error("the hash field itself changed the hash")
	}
}

func TestCheckpoint_SignedCheckpointsVerifyAndChangesDoNot(t *testing.T) {
	k := newKey(t)
	cp, err := audit.SignCheckpoint(k.priv, 42, bytes.Repeat([]byte{7}, 32), t0, "server-a")
	if err != nil {
		t.Fatal(err)
	}
	if cp.KeyId != k.id() || !bytes.Equal(cp.PublicKey, k.der) {
		t.Fatalf("checkpoint key %s / %x, want %s", cp.KeyId, cp.PublicKey, k.id())
	}
	if err := audit.VerifyCheckpoint(cp); err != nil {
		t.Fatalf("VerifyCheckpoint of a fresh checkpoint: %v", err)
	}
	other := newKey(t)
	changes := map[string]func(c *typesv1.AuditCheckpoint){
		"seq":        func(c *typesv1.AuditCheckpoint) { c.Seq++ },
		"head_hash":  func(c *typesv1.AuditCheckpoint) { c.HeadHash[3] ^= 1 },
		"time":       func(c *typesv1.AuditCheckpoint) { c.Time++ },
		"key":        func(c *typesv1.AuditCheckpoint) { c.PublicKey, c.KeyId = other.der, other.id() },
		"key_id":     func(c *typesv1.AuditCheckpoint) { c.KeyId = other.id() },
		"signature":  func(c *typesv1.AuditCheckpoint) { c.Signature = c.Signature[:len(c.Signature)-1] },
		"public key": func(c *typesv1.AuditCheckpoint) { c.PublicKey = []byte("junk"); c.KeyId = audit.KeyID(c.PublicKey) },
	}
	for name, change := range changes {
		c := proto.Clone(cp).(*typesv1.AuditCheckpoint)
		change(c)
		if err := audit.VerifyCheckpoint(c); err == nil {
			t.Errorf("a checkpoint with a changed %s verifies", name)
		}
	}
	// The server name is informative, not signed.
	c := proto.Clone(cp).(*typesv1.AuditCheckpoint)
	c.Server = "renamed"
	if err := audit.VerifyCheckpoint(c); err != nil {
		t.Errorf("changing the server name broke the signature: %v", err)
	}
}

func TestParseKeyAnnouncement_ReadsWhatAnnounceKeyWrote(t *testing.T) {
	k := newKey(t)
	r := newLog(t).announce(k).records[0]
	id, der, err := audit.ParseKeyAnnouncement(r)
	if err != nil || id != k.id() || !bytes.Equal(der, k.der) {
		t.Fatalf("ParseKeyAnnouncement = %s, %x, %v; want %s", id, der, err, k.id())
	}
	r.Target = "other"
	if _, _, err := audit.ParseKeyAnnouncement(r); err == nil {
		t.Fatal("an announcement whose target names another key parsed")
	}
}

func TestLine_RoundTripsEveryFieldExactly(t *testing.T) {
	k := newKey(t)
	l := newLog(t).announce(k)
	for _, d := range []map[string]any{nil, {"html": "<b>&</b>", "sep": "\u2028", "n": 1.5, "nested": map[string]any{"z": []any{1, "x"}}}} {
		l.addEvent(audit.Event{Actor: "unix:root(0)", Action: "admin.entry.delete", Target: "e\x01\"quoted\"", Outcome: "failure", Reason: "ünïcode ✓", Details: d})
	}
	// Details that are not a compact object travel as strings.
	for _, d := range []string{`{ "spaced": true }`, `plain text`, `["array"]`, `"a string"`, `{"bad json"`} {
		r := &typesv1.AuditRecord{Action: "x", Details: d}
		l.chain.Link(r)
		l.records = append(l.records, r)
	}
	l.checkpoint(k)
	lines := []audit.Line{{Head: l.head()}, {Checkpoint: l.cps[0]}}
	for _, r := range l.records {
		lines = append(lines, audit.Line{Record: r})
	}
	for _, line := range lines {
		b, err := audit.MarshalLine(line)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Count(b, []byte("\n")) != 1 || b[len(b)-1] != '\n' {
			t.Fatalf("MarshalLine wrote more or less than one line: %q", b)
		}
		var indented bytes.Buffer
		if err := json.Indent(&indented, b, "", "  "); err != nil {
			t.Fatal(err)
		}
		for _, form := range [][]byte{b, indented.Bytes()} {
			got, err := audit.UnmarshalLine(form)
			if err != nil {
				t.Fatalf("UnmarshalLine(%s): %v", form, err)
			}
			if diff := cmp.Diff(line, got, protocmp.Transform()); diff != "" {
				t.Fatalf("round trip of %s (-want +got):\n%s", b, diff)
			}
		}
	}
	b, _ := audit.MarshalLine(audit.Line{Record: l.records[2]})
	if !strings.Contains(string(b), `"details":`+l.records[2].Details+`,`) {
		t.Errorf("details did not travel as the record's JSON object, byte for byte: %s", b)
	}
}

func TestUnmarshalLine_RefusesWhatItDidNotWrite(t *testing.T) {
	for _, line := range []string{
		`{"kind":"record","seq":1,"time":"2026-01-01T00:00:00Z","extra":1}`,
		`{"kind":"record","seq":1,"time":"yesterday"}`,
		`{"kind":"record","seq":1,"time":"2026-01-01T00:00:00Z","hash":"zz"}`,
		`{"kind":"record","seq":1,"time":"2026-01-01T00:00:00Z","details":[1]}`,
		`{"kind":"mystery"}`,
		`{"kind":"head","seq":-1}`,
		`not json`,
	} {
		if _, err := audit.UnmarshalLine([]byte(line)); err == nil {
			t.Errorf("UnmarshalLine(%s) succeeded", line)
		}
	}
}
