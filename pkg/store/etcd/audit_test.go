package etcd_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// auditChain builds n records continuing h, with stand-in hashes.
func auditChain(h store.AuditHead, n int, tag string) []*typesv1.AuditRecord {
	prev := h.Hash
	if h.Seq == 0 {
		prev = make([]byte, store.AuditHashSize)
	}
	out := make([]*typesv1.AuditRecord, n)
	for i := range out {
		seq := h.Seq + uint64(i) + 1
		sum := sha256.Sum256(fmt.Appendf(nil, "%d/%x/%s", seq, prev, tag))
		out[i] = &typesv1.AuditRecord{
			Seq: seq, Time: int64(seq), Actor: "server", Action: "admin.entry.create", Outcome: "success",
			Target: fmt.Sprintf("%s-%d", tag, seq), Details: `{"padding":"` + string(bytes.Repeat([]byte("x"), 200)) + `"}`,
			PrevHash: prev, Hash: sum[:],
		}
		prev = out[i].Hash
	}
	return out
}

// checkChain reads the whole log of s and checks it forms one chain of n
// records ending at the head.
func checkChain(t *testing.T, s *etcd.Store, n int) {
	t.Helper()
	recs, err := s.ListAudit(t.Context(), store.ListAuditRequest{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(recs) != n {
		t.Fatalf("ListAudit returned %d records, want %d", len(recs), n)
	}
	prev := make([]byte, store.AuditHashSize)
	for i, r := range recs {
		if r.Seq != uint64(i+1) || !bytes.Equal(r.PrevHash, prev) {
			t.Fatalf("record at position %d (seq %d) does not continue the chain", i, r.Seq)
		}
		prev = r.Hash
	}
	h, err := s.AuditHead(t.Context())
	if err != nil || h.Seq != uint64(n) || !bytes.Equal(h.Hash, prev) {
		t.Fatalf("AuditHead = %d/%x, %v; want %d and the last record's hash", h.Seq, h.Hash, err, n)
	}
}

func TestAppendAudit_LargeBatchFitsEtcdsDefaultLimits(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.Options{MaxTxnOps: 128})
	s := openStore(t, []string{m.ClientURL}, etcd.Config{})
	// 4096 records of ~300 bytes: 64 groups, well below 128 operations and
	// etcd's default 1.5 MiB request.
	const n = 4096
	_, err := s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
		recs := auditChain(h, n, "big")
		return store.AuditAppend{Records: recs, Checkpoint: &typesv1.AuditCheckpoint{Seq: n, HeadHash: recs[n-1].Hash, KeyId: "k"}}, nil
	})
	if err != nil {
		t.Fatalf("AppendAudit of %d records with --max-txn-ops=128: %v", n, err)
	}
	checkChain(t, s, n)
}

func TestAppendAudit_ServersSharingTheStoreFormOneChain(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.Options{})
	prefix := fmt.Sprintf("/nhid-test/audit-%d/", prefixes.Add(1))
	servers := []*etcd.Store{
		openStore(t, []string{m.ClientURL}, etcd.Config{Prefix: prefix}),
		openStore(t, []string{m.ClientURL}, etcd.Config{Prefix: prefix}),
		openStore(t, []string{m.ClientURL}, etcd.Config{Prefix: prefix}),
	}
	const appends, per = 15, 7
	var wg sync.WaitGroup
	errs := make(chan error, len(servers)*appends)
	for i, s := range servers {
		wg.Go(func() {
			for a := range appends {
				var tries int
				_, err := s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
					tries++
					recs := auditChain(h, per, fmt.Sprintf("s%d-%d-%d", i, a, tries))
					return store.AuditAppend{Records: recs}, nil
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
		t.Fatalf("AppendAudit: %v", err)
	}
	for _, s := range servers {
		checkChain(t, s, len(servers)*appends*per)
	}
}
