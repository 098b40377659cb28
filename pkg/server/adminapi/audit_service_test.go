package adminapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/audit/auditlog"
	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/store/bolt"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// auditHarness serves AuditService over a real Unix socket, on an audit
// log (pkg/audit/auditlog) over a real bolt store holding n records.
type auditHarness struct {
	log    *auditlog.Log
	client adminv1.AuditServiceClient
	times  []int64 // times[i] is record i+1's time
}

func newAuditHarness(t *testing.T, n int) *auditHarness {
	t.Helper()
	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l, err := auditlog.New(auditlog.Config{Store: st, KeyFile: filepath.Join(dir, "audit", "checkpoint.key"), CheckpointEvery: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := range n - 1 {
		l.Record(ctx, audit.Event{Actor: "unix:root(0)", Action: "admin.entry.create", Target: fmt.Sprint(i), Outcome: audit.OutcomeSuccess})
		// Small logs are appended one record at a time, so that
		// checkpoints land exactly every 100 records.
		if n <= 300 || i == n-2 {
			if err := l.Flush(testCtx(t)); err != nil {
				t.Fatal(err)
			}
		}
	}
	svc, err := New(Config{TrustDomain: td, Store: &countingStore{Store: st}, AuditLog: l})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "admin.sock")
	lis, err := peercred.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	unary, stream := AuthorizePeer(nil, nil)
	srv := grpc.NewServer(grpc.Creds(peercred.TransportCredentials()), grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	svc.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	h := &auditHarness{log: l, client: adminv1.NewAuditServiceClient(dial(t, sock))}
	for _, r := range h.list(t, &adminv1.ListAuditRecordsRequest{}) {
		h.times = append(h.times, r.Time)
	}
	if len(h.times) != n {
		t.Fatalf("harness holds %d records, want %d", len(h.times), n)
	}
	return h
}

// list reads a whole stream, failing the test on error.
func (h *auditHarness) list(t *testing.T, req *adminv1.ListAuditRecordsRequest) []*typesv1.AuditRecord {
	t.Helper()
	recs, err := h.listErr(t, req)
	if err != nil {
		t.Fatalf("ListAuditRecords(%v): %v", req, err)
	}
	return recs
}

func (h *auditHarness) listErr(t *testing.T, req *adminv1.ListAuditRecordsRequest) ([]*typesv1.AuditRecord, error) {
	stream, err := h.client.ListAuditRecords(testCtx(t), req)
	if err != nil {
		return nil, err
	}
	var out []*typesv1.AuditRecord
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if len(resp.GetRecords()) == 0 || len(resp.GetRecords()) > auditPage {
			t.Fatalf("a page of %d records", len(resp.GetRecords()))
		}
		out = append(out, resp.GetRecords()...)
	}
}

// seqs are the seqs of recs.
func seqs(recs []*typesv1.AuditRecord) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.GetSeq()
	}
	return out
}

// span is the seqs from a to b.
func span(a, b uint64) []uint64 {
	var out []uint64
	for s := a; s <= b; s++ {
		out = append(out, s)
	}
	return out
}

func TestAuditService_ListsRecordsInPages(t *testing.T) {
	h := newAuditHarness(t, 1234)
	at := func(seq int) int64 { return h.times[seq-1] }
	tests := []struct {
		name string
		req  *adminv1.ListAuditRecordsRequest
		want []uint64
	}{
		{"everything, in pages", &adminv1.ListAuditRecordsRequest{}, span(1, 1234)},
		{"from a seq", &adminv1.ListAuditRecordsRequest{FromSeq: 1001}, span(1001, 1234)},
		{"limit", &adminv1.ListAuditRecordsRequest{FromSeq: 10, Limit: 600}, span(10, 609)},
		{"since and until", &adminv1.ListAuditRecordsRequest{Since: at(700), Until: at(1100)}, nil},
		{"tail", &adminv1.ListAuditRecordsRequest{Tail: 5}, span(1230, 1234)},
		{"tail beyond the log", &adminv1.ListAuditRecordsRequest{Tail: 5000}, span(1, 1234)},
		{"tail after the other filters", &adminv1.ListAuditRecordsRequest{Limit: 100, Tail: 3}, span(98, 100)},
		{"tail of a time range", &adminv1.ListAuditRecordsRequest{Until: at(501), Tail: 2}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := seqs(h.list(t, tt.req))
			want := tt.want
			if want == nil { // time filters: records with since <= time < until
				for i, ts := range h.times {
					if ts >= tt.req.Since && (tt.req.Until == 0 || ts < tt.req.Until) {
						want = append(want, uint64(i+1))
					}
				}
				if tt.req.Tail > 0 && len(want) > int(tt.req.Tail) {
					want = want[len(want)-int(tt.req.Tail):]
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("seqs %v..%v (%d), want %v..%v (%d)", first(got), last(got), len(got), first(want), last(want), len(want))
			}
		})
	}
}

func first(s []uint64) any {
	if len(s) == 0 {
		return "-"
	}
	return s[0]
}

func last(s []uint64) any {
	if len(s) == 0 {
		return "-"
	}
	return s[len(s)-1]
}

func TestAuditService_RefusesBadRequestsNamingTheField(t *testing.T) {
	h := newAuditHarness(t, 3)
	for _, tt := range []struct {
		req   *adminv1.ListAuditRecordsRequest
		field string
	}{
		{&adminv1.ListAuditRecordsRequest{Since: -1}, "since"},
		{&adminv1.ListAuditRecordsRequest{Until: -5}, "until"},
		{&adminv1.ListAuditRecordsRequest{Since: 10, Until: 5}, "until: 5 is before since 10"},
		{&adminv1.ListAuditRecordsRequest{Limit: -1}, "limit"},
		{&adminv1.ListAuditRecordsRequest{Tail: -1}, "tail"},
		{&adminv1.ListAuditRecordsRequest{Tail: maxAuditTail + 1}, "tail"},
	} {
		_, err := h.listErr(t, tt.req)
		requireCode(t, err, codes.InvalidArgument, tt.field)
	}
	_, err := h.client.ListAuditCheckpoints(testCtx(t), &adminv1.ListAuditCheckpointsRequest{Limit: maxCheckpointPage + 1})
	requireCode(t, err, codes.InvalidArgument, "limit")
	_, err = h.client.ListAuditCheckpoints(testCtx(t), &adminv1.ListAuditCheckpointsRequest{Limit: -1})
	requireCode(t, err, codes.InvalidArgument, "limit")
}

func TestAuditService_HeadAndCheckpointsVerify(t *testing.T) {
	h := newAuditHarness(t, 250)
	head, err := h.client.GetAuditHead(testCtx(t), &adminv1.GetAuditHeadRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if head.GetSeq() != 250 || len(head.GetTrustedKeys()) != 1 || audit.KeyID(head.GetTrustedKeys()[0]) != h.log.KeyID() {
		t.Fatalf("GetAuditHead = seq %d with %d keys; want 250 and the log's key %s", head.GetSeq(), len(head.GetTrustedKeys()), h.log.KeyID())
	}
	cps, err := h.client.ListAuditCheckpoints(testCtx(t), &adminv1.ListAuditCheckpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	v := audit.NewVerifier(audit.VerifyConfig{
		TrustedKeys: []audit.TrustedKey{{PublicKey: head.GetTrustedKeys()[0], Source: audit.TrustServer}},
		Checkpoints: cps.GetCheckpoints(), Head: &audit.Head{Seq: head.GetSeq(), Hash: head.GetHash()},
	})
	for _, r := range h.list(t, &adminv1.ListAuditRecordsRequest{}) {
		if err := v.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := v.Finish()
	if err != nil || sum.Checkpoints != 2 || sum.CoveredSeq != 200 {
		t.Fatalf("verify what the service returned: %+v, %v; want 2 checkpoints covering 200", sum, err)
	}
	page, err := h.client.ListAuditCheckpoints(testCtx(t), &adminv1.ListAuditCheckpointsRequest{FromSeq: 101, Limit: 1})
	if err != nil || len(page.GetCheckpoints()) != 1 || page.GetCheckpoints()[0].GetSeq() != 200 {
		t.Fatalf("checkpoints from 101, limit 1: %v, %v", page.GetCheckpoints(), err)
	}
}
