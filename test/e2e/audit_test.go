package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/nhid/nhid/pkg/audit"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// auditRecords exports the whole log through nhidctl and returns its
// records.
func (s *server) auditRecords(t *testing.T) []*typesv1.AuditRecord {
	t.Helper()
	var out []*typesv1.AuditRecord
	for _, line := range strings.Split(strings.TrimSpace(s.mustCtl(t, "audit", "export")), "\n") {
		l, err := audit.UnmarshalLine([]byte(line))
		if err != nil {
			t.Fatalf("audit export line %q: %v", line, err)
		}
		if l.Record != nil {
			out = append(out, l.Record)
		}
	}
	return out
}

// waitForActions waits until the log holds a record of every action.
func (s *server) waitForActions(t *testing.T, actions ...string) []*typesv1.AuditRecord {
	t.Helper()
	var recs []*typesv1.AuditRecord
	eventually(t, waitTimeout, "audit records of "+strings.Join(actions, ", "), func() error {
		recs = s.auditRecords(t)
		have := map[string]bool{}
		for _, r := range recs {
			have[r.GetAction()] = true
		}
		for _, a := range actions {
			if !have[a] {
				return fmt.Errorf("no %s record among %d", a, len(recs))
			}
		}
		return nil
	})
	return recs
}

// auditVerify runs nhidctl audit verify with args.
func (s *server) auditVerify(args ...string) (string, error) {
	return s.ctl(append([]string{"audit", "verify"}, args...)...)
}

// tamperBolt opens the stopped server's bbolt file and lets fn change the
// audit bucket.
func tamperBolt(t *testing.T, dir string, fn func(b *bbolt.Bucket) error) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "data", "nhid.db"), 0o600, &bbolt.Options{Timeout: waitTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { return fn(tx.Bucket([]byte("audit"))) }); err != nil {
		t.Fatal(err)
	}
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestAudit_TamperingWithTheBoltFileIsDetectedAndNamed(t *testing.T) {
	s := startServer(t)
	_, agentID := s.joinToken(t)
	out := s.mustCtl(t, "-o", "json", "entry", "create", "--spiffe-id", "spiffe://"+trustDomain+"/audited",
		"--parent-id", agentID, "--selector", "unix:uid:1001", "--purpose", "audit e2e", "--owner", "ops@example.org")
	var created struct {
		Entry struct {
			ID string `json:"id"`
		} `json:"entry"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	s.mustCtl(t, "entry", "delete", created.Entry.ID)
	// The admin changes are recorded by the admin API.
	s.waitForActions(t, audit.ActionAuditKey, "admin.token.generate", "admin.entry.create", "admin.entry.delete")
	if out, err := s.auditVerify(); err != nil || !strings.Contains(out, "verified") {
		t.Fatalf("verify of a fresh log: %v\n%s", err, out)
	}
	keyFile := filepath.Join(s.dir, "server-audit.pem")
	writeFile(t, keyFile, s.mustCtl(t, "audit", "head", "-o", "pem"))

	// A restart keeps the chain: seq continues and the new audit.key
	// record links to the last one before the stop.
	before := s.auditRecords(t)
	s.stop()
	s = startServerAt(t, s.dir, s.port)
	after := s.waitForActions(t, audit.ActionServerStop)
	for len(after) <= len(before)+1 {
		after = s.waitForActions(t, audit.ActionServerStop)
		time.Sleep(50 * time.Millisecond)
	}
	last := before[len(before)-1]
	stopRec, next := after[len(before)], after[len(before)+1]
	if stopRec.GetAction() != audit.ActionServerStop || stopRec.GetSeq() != last.GetSeq()+1 ||
		next.GetAction() != audit.ActionAuditKey || next.GetSeq() != stopRec.GetSeq()+1 || !bytes.Equal(next.GetPrevHash(), stopRec.GetHash()) {
		t.Fatalf("across a restart: last %d %s, then %d %s, then %d %s", last.GetSeq(), last.GetAction(),
			stopRec.GetSeq(), stopRec.GetAction(), next.GetSeq(), next.GetAction())
	}
	if out, err := s.auditVerify("--trusted-key", keyFile); err != nil {
		t.Fatalf("verify after a restart, pinned to the key from before: %v\n%s", err, out)
	}
	s.stop()

	// The record of the entry's creation is in the middle of the log.
	var victim *typesv1.AuditRecord
	for _, r := range after {
		if r.GetAction() == "admin.entry.create" {
			victim = r
		}
	}
	db := filepath.Join(s.dir, "data", "nhid.db")
	intact := filepath.Join(s.dir, "intact.db")
	copyFile(t, db, intact)

	tests := []struct {
		name   string
		tamper func(b *bbolt.Bucket) error
		want   string
	}{
		{"one byte of a record flipped", func(b *bbolt.Bucket) error {
			v := bytes.Clone(b.Get(seqKey(victim.GetSeq())))
			i := bytes.Index(v, []byte(created.Entry.ID))
			if i < 0 {
				return fmt.Errorf("the entry id is not in record %d", victim.GetSeq())
			}
			v[i] ^= 0x01 // a hex digit becomes another printable character
			return b.Put(seqKey(victim.GetSeq()), v)
		}, fmt.Sprintf("audit verify: record %d was changed: hash mismatch", victim.GetSeq())},
		{"one record deleted", func(b *bbolt.Bucket) error {
			return b.Delete(seqKey(victim.GetSeq()))
		}, fmt.Sprintf("audit verify: record %d is missing", victim.GetSeq())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			copyFile(t, intact, db)
			tamperBolt(t, s.dir, tt.tamper)
			s = startServerAt(t, s.dir, s.port)
			defer s.stop()
			for _, args := range [][]string{nil, {"--trusted-key", keyFile}} {
				out, err := s.auditVerify(args...)
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(out, "NOT VERIFIED") {
					t.Fatalf("verify %v of a tampered log: %v\n%s\nwant it to fail with %q", args, err, out, tt.want)
				}
			}
		})
	}

	copyFile(t, intact, db)
	s = startServerAt(t, s.dir, s.port)
	if out, err := s.auditVerify("--trusted-key", keyFile); err != nil {
		t.Fatalf("verify of the intact log again: %v\n%s", err, out)
	}
}

// startAuditHAServer starts nhid-server on the etcd store of members,
// signing checkpoints every second.
func startAuditHAServer(t *testing.T, members []*etcdMember, prefix string) *server {
	t.Helper()
	dir := shortTempDir(t)
	cfg := filepath.Join(dir, "server.yaml")
	writeFile(t, cfg, fmt.Sprintf(`version: 1
server:
  store:
    kind: etcd
    endpoints: [%s]
    prefix: %s
  audit:
    checkpoint_interval: 1s
`, strings.Join(clientURLs(members), ", "), prefix))
	s := &server{dir: dir, adminSock: filepath.Join(dir, "admin.sock"), port: freePort(t), healthPort: freePort(t)}
	s.proc = startProc(t, "nhid-server", filepath.Join(dir, "server.log"), nil, "nhid-server", "run",
		"--config", cfg, "--data-dir", filepath.Join(dir, "data"), "--trust-domain", trustDomain,
		"--bind", s.addr(), "--admin-socket", s.adminSock,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", s.healthPort), "--relying-party-address", "")
	eventually(t, waitTimeout, "nhid-server ready", func() error {
		if s.exited() {
			return fmt.Errorf("nhid-server exited:\n%s", s.log())
		}
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", s.healthPort))
	})
	return s
}

func TestAudit_ServersSharingEtcdKeepOneChain(t *testing.T) {
	members := startEtcdCluster(t, 1)
	a := startAuditHAServer(t, members, "/audit-e2e/")
	b := startAuditHAServer(t, members, "/audit-e2e/")
	a.joinToken(t)
	b.joinToken(t)
	a.joinToken(t)
	a.waitForActions(t, audit.ActionAuditKey, "admin.token.generate")
	b.stop()
	recs := a.waitForActions(t, audit.ActionServerStop)
	keys := map[string]bool{}
	for _, r := range recs {
		if r.GetAction() == audit.ActionAuditKey {
			keys[r.GetTarget()] = true
		}
	}
	if len(keys) != 2 {
		t.Fatalf("%d checkpoint keys announced in the shared chain, want one per server", len(keys))
	}
	// The chain verifies through a at once; b's key, announced in it, is
	// trusted once a signs a checkpoint after b's announcement (within a
	// second), because a's key (the server's word) anchors the chain.
	eventually(t, waitTimeout, "b's key vouched for by a's checkpoint", func() error {
		out, err := a.auditVerify("-o", "json")
		if err != nil {
			return fmt.Errorf("%v\n%s", err, out)
		}
		var v struct {
			Summary audit.Summary `json:"summary"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return err
		}
		for _, k := range v.Summary.Keys {
			if k.Trust == audit.TrustAnnounced && k.Checkpoints > 0 {
				return nil
			}
		}
		return fmt.Errorf("keys: %+v", v.Summary.Keys)
	})
}
