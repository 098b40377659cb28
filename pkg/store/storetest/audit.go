package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var auditTests = []suiteTest{
	{"EmptyLogHasHeadZero", testAuditEmpty},
	{"AppendChainsRecordsAndMovesTheHead", testAuditAppend},
	{"AppendThatDoesNotContinueTheChainStoresNothing", testAuditAppendInvalid},
	{"FnErrorStoresNothing", testAuditFnError},
	{"ListFiltersBySeqTimeAndLimit", testAuditList},
	{"ListRejectsBadRequests", testAuditListInvalid},
	{"CheckpointsAreKeptBySeqAndKey", testAuditCheckpoints},
	{"LargeAppendIsOneTransaction", testAuditLarge},
	{"ConcurrentAppendersFormOneChain", testAuditConcurrent},
	{"MutatingRecordsPassedInOrReturnedChangesNothingStored", testAuditIsolation},
}

// auditT0 is the time of the first test record, in unix nanoseconds.
const auditT0 = int64(1_800_000_000_000_000_000)

// chainRecords builds n records continuing head. Their hashes are stand-ins
// (the store never computes them): SHA-256 over seq, prev hash and tag.
func chainRecords(head store.AuditHead, n int, tag string) []*typesv1.AuditRecord {
	prev := head.Hash
	if head.Seq == 0 {
		prev = make([]byte, store.AuditHashSize)
	}
	out := make([]*typesv1.AuditRecord, n)
	for i := range out {
		seq := head.Seq + uint64(i) + 1
		h := sha256.New()
		h.Write(binary.BigEndian.AppendUint64(nil, seq))
		h.Write(prev)
		h.Write([]byte(tag))
		out[i] = &typesv1.AuditRecord{
			Seq: seq, Time: auditT0 + int64(seq)*1000, Actor: "spiffe://example.org/w", OnBehalfOf: "owner@example.org",
			Action: "grant.decide", Target: fmt.Sprintf("grant-%d", seq), Outcome: "success", Reason: tag,
			Details: `{"n":1}`, PrevHash: prev, Hash: h.Sum(nil), Server: "spiffe://example.org/nhid/server",
		}
		prev = out[i].Hash
	}
	return out
}

// appendRecords appends n records and fails the test on error.
func appendRecords(t *testing.T, s store.Store, n int, tag string) []*typesv1.AuditRecord {
	t.Helper()
	var recs []*typesv1.AuditRecord
	_, err := s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
		recs = chainRecords(h, n, tag)
		return store.AuditAppend{Records: recs}, nil
	})
	if err != nil {
		t.Fatalf("AppendAudit of %d records: %v", n, err)
	}
	return recs
}

func auditHead(t *testing.T, s store.Store) store.AuditHead {
	t.Helper()
	h, err := s.AuditHead(t.Context())
	if err != nil {
		t.Fatalf("AuditHead: %v", err)
	}
	return h
}

func listAudit(t *testing.T, s store.Store, req store.ListAuditRequest) []*typesv1.AuditRecord {
	t.Helper()
	recs, err := s.ListAudit(t.Context(), req)
	if err != nil {
		t.Fatalf("ListAudit(%+v): %v", req, err)
	}
	return recs
}

func listCheckpoints(t *testing.T, s store.Store, from uint64, limit int) []*typesv1.AuditCheckpoint {
	t.Helper()
	cps, err := s.ListAuditCheckpoints(t.Context(), from, limit)
	if err != nil {
		t.Fatalf("ListAuditCheckpoints(%d, %d): %v", from, limit, err)
	}
	return cps
}

func testAuditEmpty(t *testing.T, s store.Store) {
	if h := auditHead(t, s); h.Seq != 0 || len(h.Hash) != 0 {
		t.Fatalf("head of an empty log: %+v, want seq 0 and no hash", h)
	}
	if recs := listAudit(t, s, store.ListAuditRequest{}); len(recs) != 0 {
		t.Fatalf("ListAudit of an empty log returned %d records", len(recs))
	}
	if cps := listCheckpoints(t, s, 0, 0); len(cps) != 0 {
		t.Fatalf("ListAuditCheckpoints of an empty log returned %d", len(cps))
	}
}

func testAuditAppend(t *testing.T, s store.Store) {
	first := appendRecords(t, s, 3, "a")
	var seen store.AuditHead
	var second []*typesv1.AuditRecord
	head, err := s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
		seen = h
		second = chainRecords(h, 2, "b")
		return store.AuditAppend{Records: second}, nil
	})
	must(t, "AppendAudit", err)
	if seen.Seq != 3 || !bytes.Equal(seen.Hash, first[2].Hash) {
		t.Fatalf("fn saw head %d/%x, want 3/%x", seen.Seq, seen.Hash, first[2].Hash)
	}
	if head.Seq != 5 || !bytes.Equal(head.Hash, second[1].Hash) {
		t.Fatalf("AppendAudit returned head %d/%x, want 5/%x", head.Seq, head.Hash, second[1].Hash)
	}
	if got := auditHead(t, s); got.Seq != 5 || !bytes.Equal(got.Hash, second[1].Hash) {
		t.Fatalf("AuditHead is %d/%x, want 5/%x", got.Seq, got.Hash, second[1].Hash)
	}
	if diff := protoDiff(append(first, second...), listAudit(t, s, store.ListAuditRequest{})); diff != "" {
		t.Fatalf("ListAudit (-want +got):\n%s", diff)
	}
	// An empty append changes nothing.
	head, err = s.AppendAudit(t.Context(), func(store.AuditHead) (store.AuditAppend, error) { return store.AuditAppend{}, nil })
	must(t, "empty AppendAudit", err)
	if head.Seq != 5 {
		t.Fatalf("empty AppendAudit returned head %d, want 5", head.Seq)
	}
}

func testAuditAppendInvalid(t *testing.T, s store.Store) {
	appendRecords(t, s, 2, "a")
	before := listAudit(t, s, store.ListAuditRequest{})
	cp := func(seq uint64, hash []byte, key string) *typesv1.AuditCheckpoint {
		return &typesv1.AuditCheckpoint{Seq: seq, HeadHash: hash, KeyId: key, Signature: []byte("sig")}
	}
	tests := []struct {
		name  string
		build func(h store.AuditHead) store.AuditAppend
	}{
		{"nil record", func(store.AuditHead) store.AuditAppend {
			return store.AuditAppend{Records: []*typesv1.AuditRecord{nil}}
		}},
		{"seq skips one", func(h store.AuditHead) store.AuditAppend {
			h.Seq++
			return store.AuditAppend{Records: chainRecords(h, 1, "x")}
		}},
		{"seq repeats the head", func(h store.AuditHead) store.AuditAppend {
			h.Seq--
			r := chainRecords(h, 1, "x")
			r[0].PrevHash = before[1].Hash
			return store.AuditAppend{Records: r}
		}},
		{"gap inside the batch", func(h store.AuditHead) store.AuditAppend {
			r := chainRecords(h, 3, "x")
			return store.AuditAppend{Records: []*typesv1.AuditRecord{r[0], r[2]}}
		}},
		{"prev_hash is not the head's hash", func(h store.AuditHead) store.AuditAppend {
			r := chainRecords(h, 1, "x")
			r[0].PrevHash = before[0].Hash
			return store.AuditAppend{Records: r}
		}},
		{"prev_hash is not the previous record's hash", func(h store.AuditHead) store.AuditAppend {
			r := chainRecords(h, 2, "x")
			r[1].PrevHash = r[0].PrevHash
			return store.AuditAppend{Records: r}
		}},
		{"hash is not 32 bytes", func(h store.AuditHead) store.AuditAppend {
			r := chainRecords(h, 1, "x")
			r[0].Hash = r[0].Hash[:16]
			return store.AuditAppend{Records: r}
		}},
		{"checkpoint beyond the records", func(h store.AuditHead) store.AuditAppend {
			r := chainRecords(h, 1, "x")
			return store.AuditAppend{Records: r, Checkpoint: cp(h.Seq+2, r[0].Hash, "k")}
		}},
		{"checkpoint before the head", func(h store.AuditHead) store.AuditAppend {
			return store.AuditAppend{Checkpoint: cp(1, before[0].Hash, "k")}
		}},
		{"checkpoint with the wrong head hash", func(h store.AuditHead) store.AuditAppend {
			r := chainRecords(h, 1, "x")
			return store.AuditAppend{Records: r, Checkpoint: cp(h.Seq+1, h.Hash, "k")}
		}},
		{"checkpoint without key id", func(h store.AuditHead) store.AuditAppend {
			r := chainRecords(h, 1, "x")
			return store.AuditAppend{Records: r, Checkpoint: cp(h.Seq+1, r[0].Hash, "")}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) { return tt.build(h), nil })
			wantErrIs(t, err, store.ErrInvalidArgument, "AppendAudit")
			if h := auditHead(t, s); h.Seq != 2 || !bytes.Equal(h.Hash, before[1].Hash) {
				t.Fatalf("head moved to %d after a refused append", h.Seq)
			}
			if diff := protoDiff(before, listAudit(t, s, store.ListAuditRequest{})); diff != "" {
				t.Fatalf("records changed after a refused append (-want +got):\n%s", diff)
			}
			if cps := listCheckpoints(t, s, 0, 0); len(cps) != 0 {
				t.Fatalf("a refused append stored %d checkpoints", len(cps))
			}
		})
	}
}

func testAuditFnError(t *testing.T, s store.Store) {
	appendRecords(t, s, 1, "a")
	boom := errors.New("boom")
	_, err := s.AppendAudit(t.Context(), func(store.AuditHead) (store.AuditAppend, error) { return store.AuditAppend{}, boom })
	wantErrIs(t, err, boom, "AppendAudit with a failing fn")
	if h := auditHead(t, s); h.Seq != 1 {
		t.Fatalf("head is %d after a failed fn, want 1", h.Seq)
	}
}

func testAuditList(t *testing.T, s store.Store) {
	recs := appendRecords(t, s, 10, "a") // times auditT0 + seq*1000
	at := func(seq int64) int64 { return auditT0 + seq*1000 }
	tests := []struct {
		name string
		req  store.ListAuditRequest
		want []*typesv1.AuditRecord
	}{
		{"everything", store.ListAuditRequest{}, recs},
		{"from seq 1", store.ListAuditRequest{FromSeq: 1}, recs},
		{"from seq 4", store.ListAuditRequest{FromSeq: 4}, recs[3:]},
		{"from beyond the head", store.ListAuditRequest{FromSeq: 11}, nil},
		{"limit", store.ListAuditRequest{FromSeq: 2, Limit: 3}, recs[1:4]},
		{"since is inclusive", store.ListAuditRequest{Since: at(5)}, recs[4:]},
		{"until is exclusive", store.ListAuditRequest{Until: at(5)}, recs[:4]},
		{"since and until", store.ListAuditRequest{Since: at(3), Until: at(6)}, recs[2:5]},
		{"since, from and limit", store.ListAuditRequest{FromSeq: 5, Since: at(3), Limit: 2}, recs[4:6]},
		{"since equals until", store.ListAuditRequest{Since: at(3), Until: at(3)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := protoDiff(tt.want, listAudit(t, s, tt.req)); diff != "" {
				t.Fatalf("ListAudit(%+v) (-want +got):\n%s", tt.req, diff)
			}
		})
	}
}

func testAuditListInvalid(t *testing.T, s store.Store) {
	appendRecords(t, s, 1, "a")
	for _, req := range []store.ListAuditRequest{
		{Limit: -1}, {Since: -1}, {Until: -1}, {Since: 10, Until: 5},
	} {
		_, err := s.ListAudit(t.Context(), req)
		wantErrIs(t, err, store.ErrInvalidArgument, fmt.Sprintf("ListAudit(%+v)", req))
	}
	_, err := s.ListAuditCheckpoints(t.Context(), 0, -1)
	wantErrIs(t, err, store.ErrInvalidArgument, "ListAuditCheckpoints with limit -1")
	_, err = s.ListAudit(cancelledContext(), store.ListAuditRequest{})
	if err == nil {
		t.Fatal("ListAudit with a cancelled context succeeded")
	}
}

func testAuditCheckpoints(t *testing.T, s store.Store) {
	cp := func(seq uint64, hash []byte, key string) *typesv1.AuditCheckpoint {
		return &typesv1.AuditCheckpoint{Seq: seq, HeadHash: hash, KeyId: key, Time: auditT0, PublicKey: []byte("pk-" + key), Signature: []byte("sig"), Server: "s"}
	}
	var cps []*typesv1.AuditCheckpoint
	var recs []*typesv1.AuditRecord
	_, err := s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
		recs = chainRecords(h, 5, "a")
		// A checkpoint inside the batch is allowed (seq of one of its records).
		cps = []*typesv1.AuditCheckpoint{cp(3, recs[2].Hash, "k1")}
		return store.AuditAppend{Records: recs, Checkpoint: cps[0]}, nil
	})
	must(t, "AppendAudit with a checkpoint", err)
	// A checkpoint alone signs the head; another key may sign the same seq.
	for _, key := range []string{"k2", "k1"} {
		c := cp(5, recs[4].Hash, key)
		head, err := s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
			return store.AuditAppend{Checkpoint: c}, nil
		})
		must(t, "AppendAudit of a checkpoint alone", err)
		if head.Seq != 5 {
			t.Fatalf("a checkpoint alone moved the head to %d", head.Seq)
		}
	}
	cps = append(cps, cp(5, recs[4].Hash, "k1"), cp(5, recs[4].Hash, "k2"))
	if diff := protoDiff(cps, listCheckpoints(t, s, 0, 0)); diff != "" {
		t.Fatalf("ListAuditCheckpoints (-want +got):\n%s", diff)
	}
	if diff := protoDiff(cps[1:], listCheckpoints(t, s, 4, 0)); diff != "" {
		t.Fatalf("ListAuditCheckpoints from 4 (-want +got):\n%s", diff)
	}
	if diff := protoDiff(cps[:2], listCheckpoints(t, s, 0, 2)); diff != "" {
		t.Fatalf("ListAuditCheckpoints limit 2 (-want +got):\n%s", diff)
	}
	// One key signs one seq once: the whole append is refused.
	_, err = s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
		return store.AuditAppend{Checkpoint: cp(5, recs[4].Hash, "k2")}, nil
	})
	wantErrIs(t, err, store.ErrAlreadyExists, "a second checkpoint of seq 5 by k2")
	if got := listCheckpoints(t, s, 0, 0); len(got) != 3 {
		t.Fatalf("%d checkpoints after a refused duplicate, want 3", len(got))
	}
}

func testAuditLarge(t *testing.T, s store.Store) {
	const n = 5000
	recs := appendRecords(t, s, n, "large")
	more := appendRecords(t, s, 3, "more")
	if h := auditHead(t, s); h.Seq != n+3 {
		t.Fatalf("head after %d+3 records: %d", n, h.Seq)
	}
	all := append(recs, more...)
	for _, from := range []uint64{0, 1, 63, 64, 65, 100, 4999, 5000, 5001, 5003} {
		got := listAudit(t, s, store.ListAuditRequest{FromSeq: from, Limit: 50})
		start := max(from, 1) - 1
		want := all[start:min(start+50, uint64(len(all)))]
		if diff := protoDiff(want, got); diff != "" {
			t.Fatalf("ListAudit from %d limit 50 (-want +got):\n%s", from, diff)
		}
	}
	if got := listAudit(t, s, store.ListAuditRequest{}); len(got) != n+3 {
		t.Fatalf("ListAudit returned %d records, want %d", len(got), n+3)
	}
}

func testAuditConcurrent(t *testing.T, s store.Store) {
	const writers, appends, per = 6, 10, 4
	var wg sync.WaitGroup
	errs := make(chan error, writers*appends)
	for w := range writers {
		wg.Go(func() {
			for a := range appends {
				_, err := s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
					return store.AuditAppend{Records: chainRecords(h, per, fmt.Sprintf("w%d-%d", w, a))}, nil
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent AppendAudit: %v", err)
	}
	recs := listAudit(t, s, store.ListAuditRequest{})
	if len(recs) != writers*appends*per {
		t.Fatalf("%d records after concurrent appends, want %d", len(recs), writers*appends*per)
	}
	prev := make([]byte, store.AuditHashSize)
	for i, r := range recs {
		if r.Seq != uint64(i+1) || !bytes.Equal(r.PrevHash, prev) {
			t.Fatalf("record %d (seq %d) does not continue the chain", i+1, r.Seq)
		}
		prev = r.Hash
	}
	if h := auditHead(t, s); h.Seq != uint64(len(recs)) || !bytes.Equal(h.Hash, prev) {
		t.Fatalf("head %d/%x is not the last record", h.Seq, h.Hash)
	}
}

func testAuditIsolation(t *testing.T, s store.Store) {
	recs := appendRecords(t, s, 2, "a")
	want := listAudit(t, s, store.ListAuditRequest{})
	recs[0].Reason, recs[1].Hash[0] = "changed", recs[1].Hash[0]^0xff
	got := listAudit(t, s, store.ListAuditRequest{})
	got[0].Actor = "changed"
	if diff := protoDiff(want, listAudit(t, s, store.ListAuditRequest{})); diff != "" {
		t.Fatalf("stored records changed with the caller's copies (-want +got):\n%s", diff)
	}
	h := auditHead(t, s)
	h.Hash[0] ^= 0xff
	if again := auditHead(t, s); bytes.Equal(again.Hash, h.Hash) {
		t.Fatal("the head's hash is shared with the caller")
	}
}
