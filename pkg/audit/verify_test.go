package audit_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nhid/nhid/pkg/audit"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// scenario is what a verifier is given after a tamper.
type scenario struct {
	records []*typesv1.AuditRecord
	cps     []*typesv1.AuditCheckpoint
	head    *audit.Head
	keys    []audit.TrustedKey
	excerpt bool
	pending bool
}

func TestVerifier_NamesTheFirstBrokenRecord(t *testing.T) {
	srv := newKey(t)
	// A server's life: it announces its key, appends, checkpoints at 10
	// and 20, and appends 5 more that no checkpoint covers yet.
	base := newLog(t).announce(srv).add(9).checkpoint(srv).add(10).checkpoint(srv).add(5)
	fresh := func() scenario {
		rs, cs := base.clone()
		return scenario{records: rs, cps: cs, head: base.head(), keys: []audit.TrustedKey{srv.trusted()}}
	}
	// rechain recomputes the hashes from record i on, as an attacker with
	// write access to the store (but not the key) can.
	rechain := func(rs []*typesv1.AuditRecord, from int) {
		var c *audit.Chain
		if from == 0 {
			c = audit.NewChain(0, nil)
		} else {
			c = audit.NewChain(rs[from-1].Seq, rs[from-1].Hash)
		}
		for _, r := range rs[from:] {
			c.Link(r)
		}
	}
	tests := []struct {
		name   string
		tamper func(s *scenario)
		want   string // the failure; "" for a log that verifies
	}{
		{"an intact log verifies", func(*scenario) {}, ""},
		{"a changed field", func(s *scenario) { s.records[6].Reason = "nothing to see" }, "record 7 was changed: hash mismatch"},
		{"a changed time", func(s *scenario) { s.records[11].Time++ }, "record 12 was changed: hash mismatch"},
		{"a changed stored hash", func(s *scenario) { s.records[2].Hash[0] ^= 1 }, "record 3 was changed: hash mismatch"},
		{"a deleted record", func(s *scenario) { s.records = slices.Delete(s.records, 4, 5) }, "record 5 is missing: the log goes from seq 4 to 6"},
		{"the first record deleted", func(s *scenario) { s.records = s.records[1:] }, "record 1 is missing: the log starts at seq 2"},
		{"a duplicated record", func(s *scenario) { s.records = slices.Insert(s.records, 5, s.records[4]) }, "record 6 is missing or out of place"},
		{"a record rewritten with its own hash recomputed", func(s *scenario) {
			s.records[4].Actor = "someone else"
			s.records[4].Hash = audit.RecordHash(s.records[4])
		}, "record 6 does not link to record 5: prev_hash mismatch"},
		{"a record deleted and the rest renumbered and rechained", func(s *scenario) {
			s.records = slices.Delete(s.records, 4, 5)
			rechain(s.records, 4)
			s.head = &audit.Head{Seq: s.records[len(s.records)-1].Seq, Hash: s.records[len(s.records)-1].Hash}
		}, "checkpoint at seq 10 by key " + srv.id() + " does not match the chain: a record from seq 1 to 10 was rewritten"},
		{"the tail truncated, the head left", func(s *scenario) { s.records = s.records[:22] }, "record 23 is missing: the log ends at seq 22 but its head is at 25 (tail truncated)"},
		{"the tail truncated with the head", func(s *scenario) {
			s.records = s.records[:15]
			s.head = &audit.Head{Seq: 15, Hash: s.records[14].Hash}
		}, "record 16 is missing: a checkpoint signs seq 20 but the log ends at seq 15 (tail truncated)"},
		{"the last record changed with its hash, the head left", func(s *scenario) {
			s.records[24].Outcome = audit.OutcomeDenied
			s.records[24].Hash = audit.RecordHash(s.records[24])
		}, "record 25 was changed: it does not match the head's hash"},
		{"a checkpoint's signature changed", func(s *scenario) { s.cps[1].Signature[10] ^= 1 }, "checkpoint at seq 20 by key " + srv.id() + " is invalid: its signature does not verify"},
		{"a checkpoint moved to another seq", func(s *scenario) { s.cps[0].Seq = 11 }, "checkpoint at seq 11 by key " + srv.id() + " is invalid: its signature does not verify"},
		{"a checkpoint with another key id", func(s *scenario) { s.cps[0].KeyId = "x" }, "checkpoint at seq 10 by key x is invalid: its key_id does not name its public key"},
		{"no trusted key", func(s *scenario) { s.keys = nil }, "checkpoint at seq 10 by key " + srv.id() + " is signed by a key that is not trusted"},
		{"checkpoints removed: the log is chained but unsigned", func(s *scenario) { s.cps = nil }, ""},
		{"no trusted key, pending keys allowed", func(s *scenario) { s.keys, s.pending = nil, true }, ""},
		{"a checkpoint by a key never announced", func(s *scenario) {
			evil := newKey(t)
			cp, err := audit.SignCheckpoint(evil.priv, 15, s.records[14].Hash, t0, "evil")
			if err != nil {
				t.Fatal(err)
			}
			s.cps, s.pending = append(s.cps, cp), true
		}, "checkpoint at seq 15 by key "},
		{"a checkpoint of records before its key was announced", func(s *scenario) {
			late := newKey(t)
			more := newLog(t)
			more.chain = audit.NewChain(s.head.Seq, s.head.Hash)
			more.announce(late)
			cp, err := audit.SignCheckpoint(late.priv, 22, s.records[21].Hash, t0, "late")
			if err != nil {
				t.Fatal(err)
			}
			s.records, s.cps, s.pending = append(s.records, more.records...), append(s.cps, cp), true
			s.head = more.head()
		}, "checkpoint at seq 22 by key "},
		{"the whole log rewritten and signed with the attacker's key", func(s *scenario) {
			evil := newKey(t)
			forged := newLog(t).announce(evil).add(9).checkpoint(evil).add(10).checkpoint(evil).add(5)
			s.records, s.cps = forged.clone()
			s.head = forged.head()
		}, "checkpoint at seq 10 by key "},
		{"a rewritten log keeps the genuine checkpoints", func(s *scenario) {
			s.records[3].Target = "forged"
			rechain(s.records, 3)
			s.head = &audit.Head{Seq: 25, Hash: s.records[24].Hash}
		}, "checkpoint at seq 10 by key " + srv.id() + " does not match the chain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fresh()
			tt.tamper(&s)
			sum, err := verify(audit.VerifyConfig{TrustedKeys: s.keys, Checkpoints: s.cps, Head: s.head, Excerpt: s.excerpt, AllowPending: s.pending}, s.records)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("verify: %v; want success", err)
				}
				return
			}
			var f *audit.Failure
			if !errors.As(err, &f) {
				t.Fatalf("verify: %v; want a *Failure starting %q (summary %+v)", err, tt.want, sum)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("verify failed with\n  %v\nwant it to start with\n  %s", err, tt.want)
			}
		})
	}
}

func TestVerifier_SummarySaysWhatWasChecked(t *testing.T) {
	srv := newKey(t)
	l := newLog(t).announce(srv).add(9).checkpoint(srv).add(5)
	sum, err := verify(audit.VerifyConfig{TrustedKeys: []audit.TrustedKey{srv.trusted()}, Checkpoints: l.cps, Head: l.head()}, l.records)
	if err != nil {
		t.Fatal(err)
	}
	want := audit.Summary{Records: 15, FirstSeq: 1, LastSeq: 15, Checkpoints: 1, CoveredSeq: 10,
		Keys: []audit.KeyInfo{{KeyID: srv.id(), Trust: audit.TrustPinned, AnnouncedAt: 1, Checkpoints: 1, Server: "server-" + srv.id()[:4]}}}
	if diff := cmpDiff(want, sum); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
}

func TestVerifier_TrustFollowsAnnouncementsCoveredByTrustedCheckpoints(t *testing.T) {
	old, cur, other := newKey(t), newKey(t), newKey(t)
	// The server lost its data dir: a new key from seq 12 on. Another HA
	// server announced its key at 6 and checkpointed at 13.
	l := newLog(t).announce(old).add(4).announce(other).add(4).checkpoint(old).
		add(1).announce(cur).add(1).checkpoint(other).add(3).checkpoint(cur)
	cfg := audit.VerifyConfig{Checkpoints: l.cps, Head: l.head(), TrustedKeys: []audit.TrustedKey{{PublicKey: cur.der, Source: audit.TrustServer}}}
	sum, err := verify(cfg, l.records)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	trust := map[string]string{}
	for _, k := range sum.Keys {
		trust[k.KeyID] = k.Trust
	}
	want := map[string]string{old.id(): audit.TrustAnnounced, other.id(): audit.TrustAnnounced, cur.id(): audit.TrustServer}
	if diff := cmpDiff(want, trust); diff != "" {
		t.Fatalf("key trust (-want +got):\n%s", diff)
	}
	if sum.Checkpoints != 3 || sum.CoveredSeq != 16 {
		t.Fatalf("summary: %d checkpoints covering %d; want 3 covering 16", sum.Checkpoints, sum.CoveredSeq)
	}

	// A key announced after every checkpoint by a trusted key is not
	// trusted: nothing signed by a trusted key vouches for it. Pinned
	// keys refuse it; otherwise it is pending and adds no coverage.
	late := newKey(t)
	l.announce(late).add(1).checkpoint(late)
	cfg.Checkpoints, cfg.Head = l.cps, l.head()
	_, err = verify(cfg, l.records)
	if err == nil || !strings.HasPrefix(err.Error(), "checkpoint at seq 18 by key "+late.id()+" is signed by a key that is not trusted") {
		t.Fatalf("verify with a key only its own checkpoint covers: %v", err)
	}
	cfg.AllowPending = true
	sum, err = verify(cfg, l.records)
	if err != nil || sum.Pending != 1 || sum.CoveredSeq != 16 || sum.Keys[len(sum.Keys)-1].Trust != audit.TrustPending {
		t.Fatalf("verify allowing pending keys: %v, %+v", err, sum)
	}
	// Then the trusted server signs again: the late key is vouched for.
	l.add(1).checkpoint(cur)
	cfg.Checkpoints, cfg.Head = l.cps, l.head()
	if sum, err = verify(cfg, l.records); err != nil || sum.Pending != 0 || sum.Checkpoints != 5 || sum.CoveredSeq != 19 {
		t.Fatalf("verify once the trusted key signed after the announcement: %v, %+v", err, sum)
	}
}

func TestVerifier_AForgedLogSignedByTheForgersKeyCoversNothing(t *testing.T) {
	srv, evil := newKey(t), newKey(t)
	forged := newLog(t).announce(evil).add(9).checkpoint(evil).add(10).checkpoint(evil)
	cfg := audit.VerifyConfig{TrustedKeys: []audit.TrustedKey{srv.trusted()}, Checkpoints: forged.cps, Head: forged.head(), AllowPending: true}
	sum, err := verify(cfg, forged.records)
	if err != nil || sum.CoveredSeq != 0 || sum.Checkpoints != 0 || sum.Pending != 2 {
		t.Fatalf("a forged log allowing pending keys: %v, %+v; want it chained but covered by nothing", err, sum)
	}
}

func TestVerifier_ExcerptChecksItsOwnRange(t *testing.T) {
	srv := newKey(t)
	l := newLog(t).announce(srv).add(9).checkpoint(srv).add(10).checkpoint(srv).add(10).checkpoint(srv)
	rs, cs := l.clone()
	sum, err := verify(audit.VerifyConfig{TrustedKeys: []audit.TrustedKey{srv.trusted()}, Checkpoints: cs, Excerpt: true}, rs[12:25])
	if err != nil {
		t.Fatalf("verify an excerpt: %v", err)
	}
	if !sum.Excerpt || sum.FirstSeq != 13 || sum.LastSeq != 25 || sum.Checkpoints != 1 || sum.Unchecked != 2 {
		t.Fatalf("excerpt summary: %+v", sum)
	}
	rs[15].Reason = "changed"
	if _, err := verify(audit.VerifyConfig{Excerpt: true}, rs[12:25]); err == nil || err.Error() != "record 16 was changed: hash mismatch" {
		t.Fatalf("verify a changed excerpt: %v", err)
	}
}
