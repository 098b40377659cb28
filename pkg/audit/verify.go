package audit

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Failure is the first place where a log does not verify: a record, or a
// checkpoint at a seq. Error reads "record 42 was changed: hash mismatch".
type Failure struct {
	// Seq is the first broken record, or the seq of the broken checkpoint.
	Seq uint64
	// Checkpoint: the failure is about a checkpoint at Seq, not a record.
	Checkpoint bool
	// KeyID is the checkpoint's key, for checkpoint failures.
	KeyID string
	// Reason completes the sentence "record N ..." or "checkpoint at seq N
	// ...".
	Reason string
}

func (f *Failure) Error() string {
	if f.Checkpoint {
		return fmt.Sprintf("checkpoint at seq %d by key %s %s", f.Seq, f.KeyID, f.Reason)
	}
	return fmt.Sprintf("record %d %s", f.Seq, f.Reason)
}

// before orders failures: lower seq first, a record before a checkpoint.
func (f *Failure) before(g *Failure) bool {
	if f.Seq != g.Seq {
		return f.Seq < g.Seq
	}
	return !f.Checkpoint && g.Checkpoint
}

// Key trust sources.
const (
	TrustPinned    = "pinned"    // given by the verifier's user (--trusted-key)
	TrustServer    = "server"    // the key the server says it holds
	TrustAnnounced = "announced" // announced in the chain, covered by a trusted checkpoint
	// TrustPending: announced in the chain after everything trusted
	// checkpoints cover; its checkpoints prove nothing yet (AllowPending).
	TrustPending = "pending"
	TrustNone    = "untrusted"
)

// TrustedKey is a checkpoint key the verifier trusts from the start, and
// where it comes from (TrustPinned or TrustServer).
type TrustedKey struct {
	PublicKey []byte // PKIX (DER)
	Source    string
}

// VerifyConfig is what a Verifier checks records against.
type VerifyConfig struct {
	// TrustedKeys anchor the checkpoints.
	TrustedKeys []TrustedKey
	// Checkpoints are every stored checkpoint, in any order. Read them
	// before the head and the records: a checkpoint beyond the head then
	// means the log was truncated.
	Checkpoints []*typesv1.AuditCheckpoint
	// Head, if set, is where the log must end. Records beyond it are
	// ignored (they were appended after the head was read).
	Head *Head
	// Excerpt accepts a first record other than seq 1 (an export with
	// --since): its prev_hash cannot be checked, nor checkpoints outside
	// the records.
	Excerpt bool
	// AllowPending accepts checkpoints by keys announced in the chain but
	// not yet vouched for: announced after the last record a trusted
	// checkpoint covers, as a server that joined (or got a new key) since
	// the trusted servers last signed. They count as pending, not as
	// coverage. Without it (keys pinned by the user) they fail.
	AllowPending bool
}

// KeyInfo describes one checkpoint key a verification met.
type KeyInfo struct {
	KeyID string `json:"key_id"`
	// Trust is TrustPinned, TrustServer, TrustAnnounced or TrustNone.
	Trust string `json:"trust"`
	// AnnouncedAt is the seq of its audit.key record, 0 if none.
	AnnouncedAt uint64 `json:"announced_at,omitempty"`
	// Checkpoints is how many checkpoints it signed.
	Checkpoints int    `json:"checkpoints"`
	Server      string `json:"server,omitempty"`
}

// Summary is what a verification checked.
type Summary struct {
	Records  uint64 `json:"records"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Checkpoints is how many checkpoints were checked against the chain.
	Checkpoints int `json:"checkpoints"`
	// CoveredSeq is the highest seq a trusted checkpoint signs: records
	// after it are chained but not yet signed.
	CoveredSeq uint64    `json:"covered_seq"`
	Keys       []KeyInfo `json:"keys"`
	// Excerpt: the records did not start at seq 1.
	Excerpt bool `json:"excerpt,omitempty"`
	// Unchecked counts checkpoints outside an excerpt's records.
	Unchecked int `json:"unchecked_checkpoints,omitempty"`
	// Pending counts checkpoints by keys not yet vouched for
	// (AllowPending).
	Pending int `json:"pending_checkpoints,omitempty"`
}

// cpState is one checkpoint and what the walk learnt about it.
type cpState struct {
	cp      *typesv1.AuditCheckpoint
	sigErr  error
	matched bool // its head hash equals the recomputed hash at its seq
}

// Verifier checks a log record by record, in seq order, without keeping
// the records: Add each, then Finish.
type Verifier struct {
	cfg      VerifyConfig
	x        *hasher
	cps      map[uint64][]*cpState
	all      []*cpState
	started  bool
	lastSeq  uint64
	lastHash []byte
	sum      Summary
	fails    []*Failure
	stopped  bool // the chain broke: later records are not checked
	// announced maps key ids to the seq of their first audit.key record.
	announced map[string]uint64
	// lastMatched is the seq of the newest checkpoint whose head hash
	// matched, to say where a rewrite happened.
	lastMatched uint64
}

// NewVerifier returns a Verifier for cfg. Checkpoint signatures are
// checked here; their head hashes as the records pass.
func NewVerifier(cfg VerifyConfig) *Verifier {
	v := &Verifier{cfg: cfg, x: newHasher(), cps: map[uint64][]*cpState{}, announced: map[string]uint64{}}
	for _, cp := range cfg.Checkpoints {
		st := &cpState{cp: cp, sigErr: VerifyCheckpoint(cp)}
		v.cps[cp.GetSeq()] = append(v.cps[cp.GetSeq()], st)
		v.all = append(v.all, st)
	}
	slices.SortStableFunc(v.all, func(a, b *cpState) int { return cmp.Compare(a.cp.GetSeq(), b.cp.GetSeq()) })
	return v
}

func (v *Verifier) fail(f *Failure) { v.fails = append(v.fails, f) }

// Add checks the next record. It returns the chain's first failure once
// there is one; records after it are not checked.
func (v *Verifier) Add(r *typesv1.AuditRecord) error {
	if v.stopped {
		return v.first()
	}
	if h := v.cfg.Head; h != nil && r.GetSeq() > h.Seq {
		return nil
	}
	if f := v.check(r); f != nil {
		v.fail(f)
		v.stopped = true
		return v.first()
	}
	v.started, v.lastSeq, v.lastHash = true, r.GetSeq(), r.GetHash()
	v.sum.Records++
	v.sum.LastSeq = r.GetSeq()
	if r.GetAction() == ActionAuditKey {
		if id, _, err := ParseKeyAnnouncement(r); err == nil {
			if _, seen := v.announced[id]; !seen {
				v.announced[id] = r.GetSeq()
			}
		}
	}
	for _, st := range v.cps[r.GetSeq()] {
		v.matchCheckpoint(st, r)
	}
	return nil
}

// check verifies r's place in the chain and its hash.
func (v *Verifier) check(r *typesv1.AuditRecord) *Failure {
	seq := r.GetSeq()
	if !v.started {
		v.sum.FirstSeq = seq
		switch {
		case seq == 1:
			if !bytes.Equal(r.GetPrevHash(), ZeroHash()) {
				return &Failure{Seq: 1, Reason: "was changed: the first record's prev_hash is not 32 zero bytes"}
			}
		case v.cfg.Excerpt && seq > 1:
			v.sum.Excerpt = true
		default:
			return &Failure{Seq: 1, Reason: fmt.Sprintf("is missing: the log starts at seq %d", seq)}
		}
	} else {
		want := v.lastSeq + 1
		switch {
		case seq > want:
			return &Failure{Seq: want, Reason: fmt.Sprintf("is missing: the log goes from seq %d to %d", v.lastSeq, seq)}
		case seq < want:
			return &Failure{Seq: want, Reason: fmt.Sprintf("is missing or out of place: a record with seq %d follows record %d (inserted or reordered)", seq, v.lastSeq)}
		}
	}
	if !bytes.Equal(v.x.record(r), r.GetHash()) {
		return &Failure{Seq: seq, Reason: "was changed: hash mismatch"}
	}
	if v.started && !bytes.Equal(r.GetPrevHash(), v.lastHash) {
		return &Failure{Seq: seq, Reason: fmt.Sprintf("does not link to record %d: prev_hash mismatch (a record was removed, inserted or rewritten)", v.lastSeq)}
	}
	return nil
}

// matchCheckpoint compares a checkpoint's head hash with record r, the
// record at its seq.
func (v *Verifier) matchCheckpoint(st *cpState, r *typesv1.AuditRecord) {
	if st.sigErr != nil {
		return
	}
	if !bytes.Equal(st.cp.GetHeadHash(), r.GetHash()) {
		v.fail(&Failure{Seq: r.GetSeq(), Checkpoint: true, KeyID: st.cp.GetKeyId(), Reason: fmt.Sprintf(
			"does not match the chain: a record from seq %d to %d was rewritten with new hashes, or the checkpoint was changed",
			v.lastMatched+1, r.GetSeq())})
		return
	}
	st.matched = true
	v.lastMatched = r.GetSeq()
}

// first is the earliest failure, nil if none.
func (v *Verifier) first() error {
	if len(v.fails) == 0 {
		return nil
	}
	f := slices.MinFunc(v.fails, func(a, b *Failure) int {
		if a.before(b) {
			return -1
		}
		if b.before(a) {
			return 1
		}
		return 0
	})
	return f
}

// Finish checks the end of the log and the checkpoints' keys, and returns
// the summary and the first failure (a *Failure), if any.
func (v *Verifier) Finish() (Summary, error) {
	v.checkEnd()
	v.checkCheckpoints()
	return v.sum, v.first()
}

// checkEnd compares the last record with the head and the checkpoints.
func (v *Verifier) checkEnd() {
	if v.stopped {
		return
	}
	if h := v.cfg.Head; h != nil {
		switch {
		case v.lastSeq < h.Seq:
			v.fail(&Failure{Seq: v.lastSeq + 1, Reason: fmt.Sprintf("is missing: the log ends at seq %d but its head is at %d (tail truncated)", v.lastSeq, h.Seq)})
			return
		case h.Seq > 0 && !bytes.Equal(v.lastHash, h.Hash):
			v.fail(&Failure{Seq: h.Seq, Reason: "was changed: it does not match the head's hash"})
			return
		}
	}
	for _, st := range v.all {
		seq := st.cp.GetSeq()
		switch {
		case st.sigErr != nil || st.matched:
		case seq == 0:
			v.fail(&Failure{Seq: 0, Checkpoint: true, KeyID: st.cp.GetKeyId(), Reason: "signs seq 0, which no record has"})
		case seq > v.lastSeq && (v.cfg.Head != nil || !v.cfg.Excerpt):
			v.fail(&Failure{Seq: v.lastSeq + 1, Reason: fmt.Sprintf("is missing: a checkpoint signs seq %d but the log ends at seq %d (tail truncated)", seq, v.lastSeq)})
		case v.cfg.Excerpt && (seq < v.sum.FirstSeq || seq > v.lastSeq):
			v.sum.Unchecked++
		}
	}
}

// checkCheckpoints reports bad signatures, settles which keys are trusted
// and reports checkpoints signed by others.
func (v *Verifier) checkCheckpoints() {
	limit := v.lastSeq
	if v.stopped {
		limit = v.first().(*Failure).Seq
	}
	trust := map[string]string{}
	for _, k := range v.cfg.TrustedKeys {
		if _, ok := trust[KeyID(k.PublicKey)]; !ok {
			trust[KeyID(k.PublicKey)] = k.Source
		}
	}
	v.sum.CoveredSeq = v.settleTrust(trust)
	infos := map[string]*KeyInfo{}
	info := func(id string) *KeyInfo {
		if infos[id] == nil {
			infos[id] = &KeyInfo{KeyID: id, Trust: cmp.Or(trust[id], TrustNone), AnnouncedAt: v.announced[id]}
		}
		return infos[id]
	}
	for id := range v.announced {
		info(id)
	}
	for _, k := range v.cfg.TrustedKeys {
		info(KeyID(k.PublicKey))
	}
	for _, st := range v.all {
		cp := st.cp
		if st.sigErr != nil {
			v.fail(&Failure{Seq: cp.GetSeq(), Checkpoint: true, KeyID: cp.GetKeyId(), Reason: "is invalid: " + st.sigErr.Error()})
			continue
		}
		if cp.GetSeq() > limit {
			continue
		}
		ki := info(cp.GetKeyId())
		ki.Checkpoints++
		ki.Server = cmp.Or(ki.Server, cp.GetServer())
		switch {
		case !st.matched:
		case trust[cp.GetKeyId()] != "":
			v.sum.Checkpoints++
		default:
			v.untrusted(cp)
		}
	}
	for _, ki := range infos {
		if ki.Trust == TrustNone && ki.AnnouncedAt > 0 && v.cfg.AllowPending {
			ki.Trust = TrustPending
		}
		v.sum.Keys = append(v.sum.Keys, *ki)
	}
	slices.SortFunc(v.sum.Keys, func(a, b KeyInfo) int {
		return cmp.Or(cmp.Compare(a.AnnouncedAt, b.AnnouncedAt), cmp.Compare(a.KeyID, b.KeyID))
	})
}

// untrusted judges a valid checkpoint whose key is not trusted. A key no
// record announced, or a checkpoint of records before its key's
// announcement, is forged: servers announce their key before they sign.
// A key announced after what trusted checkpoints cover may be a server
// that joined since; with AllowPending it is pending.
func (v *Verifier) untrusted(cp *typesv1.AuditCheckpoint) {
	at, announced := v.announced[cp.GetKeyId()]
	fail := func(reason string) {
		v.fail(&Failure{Seq: cp.GetSeq(), Checkpoint: true, KeyID: cp.GetKeyId(), Reason: reason})
	}
	switch {
	case !announced:
		fail("is signed by a key that is not trusted: neither pinned, nor the server's, nor announced in the chain")
	case cp.GetSeq() < at:
		fail(fmt.Sprintf("signs records before its key was announced at seq %d", at))
	case !v.cfg.AllowPending:
		fail(fmt.Sprintf("is signed by a key that is not trusted: announced at seq %d, but no checkpoint by a trusted key covers that", at))
	default:
		v.sum.Pending++
	}
}

// settleTrust extends trust to keys announced in records that a checkpoint
// by a trusted key covers, until nothing changes, and returns the highest
// seq a trusted checkpoint signs.
func (v *Verifier) settleTrust(trust map[string]string) uint64 {
	var covered uint64
	for changed := true; changed; {
		changed = false
		for _, st := range v.all {
			if st.matched && trust[st.cp.GetKeyId()] != "" && st.cp.GetSeq() > covered {
				covered = st.cp.GetSeq()
			}
		}
		for id, at := range v.announced {
			if trust[id] == "" && at <= covered {
				trust[id] = TrustAnnounced
				changed = true
			}
		}
	}
	return covered
}
