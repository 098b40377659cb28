package server

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/audit"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// auditOf reads the whole audit log through the admin API and verifies it
// against the server's key.
func auditOf(t *testing.T, srv *Server) ([]*typesv1.AuditRecord, audit.Summary) {
	t.Helper()
	client := adminv1.NewAuditServiceClient(adminConn(t, srv))
	ctx := context.Background()
	cps, err := client.ListAuditCheckpoints(ctx, &adminv1.ListAuditCheckpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	head, err := client.GetAuditHead(ctx, &adminv1.GetAuditHeadRequest{})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := client.ListAuditRecords(ctx, &adminv1.ListAuditRecordsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []audit.TrustedKey
	for _, k := range head.GetTrustedKeys() {
		keys = append(keys, audit.TrustedKey{PublicKey: k, Source: audit.TrustServer})
	}
	v := audit.NewVerifier(audit.VerifyConfig{TrustedKeys: keys, Checkpoints: cps.GetCheckpoints(), Head: &audit.Head{Seq: head.GetSeq(), Hash: head.GetHash()}})
	var recs []*typesv1.AuditRecord
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetRecords() {
			if r.GetSeq() > head.GetSeq() {
				continue
			}
			recs = append(recs, r)
			if err := v.Add(r); err != nil {
				t.Fatalf("verify: %v", err)
			}
		}
	}
	sum, err := v.Finish()
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return recs, sum
}

func actions(recs []*typesv1.AuditRecord) string {
	var out []string
	for _, r := range recs {
		out = append(out, r.GetAction())
	}
	return strings.Join(out, " ")
}

func TestServer_AuditChainContinuesAcrossRestartsAndEndsSigned(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	sink := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := testConfig(t, dataDir, t.TempDir())
	cfg.Audit = AuditConfig{Sink: sink}
	srv, stop := start(t, cfg)
	if _, err := adminv1.NewJoinTokenServiceClient(adminConn(t, srv)).GenerateToken(context.Background(), &adminv1.GenerateTokenRequest{}); err != nil {
		t.Fatal(err)
	}
	stop()

	srv2, stop2 := start(t, cfg)
	// audit.key and server.stop bracket each run; the admin change in
	// between (once admin changes are recorded) is covered too. The
	// second run's audit.key is appended shortly after it is ready.
	var recs []*typesv1.AuditRecord
	var sum audit.Summary
	deadline := time.Now().Add(waitTimeout)
	for {
		recs, sum = auditOf(t, srv2)
		got := actions(recs)
		if strings.HasPrefix(got, audit.ActionAuditKey) && strings.Contains(got, audit.ActionServerStop+" "+audit.ActionAuditKey) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("actions across a restart: %s", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if recs[0].GetTarget() != recs[len(recs)-1].GetTarget() || recs[0].GetServer() != "spiffe://example.org/nhid/server" {
		t.Fatalf("the key changed across a restart, or the server is unnamed: %v / %v", recs[0], recs[len(recs)-1])
	}
	// The first run's stop signed everything it appended.
	if sum.CoveredSeq < recs[len(recs)-2].GetSeq() {
		t.Fatalf("records up to %d are covered, want at least the first run's %d", sum.CoveredSeq, recs[len(recs)-2].GetSeq())
	}
	stop2()
	fi, err := os.Stat(filepath.Join(dataDir, auditKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("checkpoint key: %v, %v; want mode 0600", fi, err)
	}
	data, err := os.ReadFile(sink)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), `"kind":"record"`); n < len(recs) {
		t.Fatalf("the sink has %d records, the log at least %d", n, len(recs))
	}
}

func TestNew_RefusesBadAuditSettings(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), t.TempDir())
	cfg.Audit = AuditConfig{CheckpointEvery: -1, Sink: "relative/path", Buffer: -2, CheckpointInterval: -1}
	_, err := New(cfg)
	for _, want := range []string{"Audit.CheckpointEvery", "Audit.Sink", "Audit.Buffer", "Audit.CheckpointInterval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New with bad audit settings: %v; want it to name %s", err, want)
		}
	}
}
