package bolt_test

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// BenchmarkAuditAppend measures AppendAudit on bbolt: one fsynced
// transaction per batch, records linked with their real hashes inside it.
func BenchmarkAuditAppend(b *testing.B) {
	for _, batch := range []int{1, 100, 1000, 4096} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s, _ := openStore(b, bolt.Options{})
			recs := make([]*typesv1.AuditRecord, batch)
			for i := range recs {
				recs[i] = &typesv1.AuditRecord{
					Time: 1_800_000_000_000_000_000 + int64(i), Actor: "spiffe://example.org/ns/prod/sa/builder",
					OnBehalfOf: "alice@example.org", Action: audit.ActionGrantDecide, Target: fmt.Sprintf("0195f3a0-%08d", i),
					Outcome: audit.OutcomeSuccess, Details: `{"rule":"allow-ci","scopes":["repo:read"],"ttl":600}`,
					Server: "spiffe://example.org/nhid/server",
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				_, err := s.AppendAudit(b.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
					c := audit.NewChain(h.Seq, h.Hash)
					for _, r := range recs {
						c.Link(r)
					}
					return store.AuditAppend{Records: recs}, nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// A stored record or checkpoint that no longer decodes is listed as a
// stand-in holding its seq, so a verifier names it instead of the listing
// failing.
func TestListAudit_ARecordOrCheckpointThatDoesNotDecodeIsListedByItsSeq(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nhid.db")
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.AppendAudit(t.Context(), func(h store.AuditHead) (store.AuditAppend, error) {
		c := audit.NewChain(h.Seq, h.Hash)
		recs := make([]*typesv1.AuditRecord, 3)
		for i := range recs {
			recs[i] = &typesv1.AuditRecord{Action: "admin.entry.create", Target: fmt.Sprint(i)}
			c.Link(recs[i])
		}
		return store.AuditAppend{Records: recs}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		if err := tx.Bucket([]byte("audit")).Put(binary.BigEndian.AppendUint64(nil, 2), []byte{0xff, 0xff, 0xff}); err != nil {
			return err
		}
		return tx.Bucket([]byte("audit_checkpoints")).Put(append(binary.BigEndian.AppendUint64(nil, 3), "kid"...), []byte{0xff})
	})
	if cerr := db.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	s, err = bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs, err := s.ListAudit(t.Context(), store.ListAuditRequest{})
	if err != nil {
		t.Fatalf("ListAudit over a corrupt record: %v", err)
	}
	if len(recs) != 3 || recs[1].Seq != 2 || len(recs[1].Hash) != 0 || !strings.Contains(recs[1].Reason, "does not decode") || recs[2].Target != "2" {
		t.Fatalf("records around a corrupt one: %v", recs)
	}
	cps, err := s.ListAuditCheckpoints(t.Context(), 0, 0)
	if err != nil || len(cps) != 1 || cps[0].Seq != 3 || cps[0].KeyId != "kid" || len(cps[0].Signature) != 0 {
		t.Fatalf("a corrupt checkpoint: %v, %v; want a stand-in with its seq and key id", cps, err)
	}
}
