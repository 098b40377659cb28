package adminapi

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/peercred"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// The tests of the admin.* audit records of admin changes (errors.go).
// They read the records from recorder (audit_test.go).

func recordsJSON(t *testing.T, rec *recorder) string {
	t.Helper()
	b, err := json.Marshal(rec.all())
	if err != nil {
		t.Fatalf("audit events do not marshal: %v", err)
	}
	return string(b)
}

// brief is what the tests compare of a record.
type brief struct{ action, target, outcome string }

func briefsOf(rec *recorder) []brief {
	var out []brief
	for _, ev := range rec.all() {
		out = append(out, brief{ev.Action, ev.Target, ev.Outcome})
	}
	return out
}

// auditedHarness is the admin API harness recording into a recorder.
func auditedHarness(t *testing.T) (*harness, *recorder) {
	t.Helper()
	h := newHarness(t, harnessOptions{})
	rec := &recorder{}
	h.svc.recorder = rec
	return h, rec
}

// testCaller is how callerName names this test process.
func testCaller(t *testing.T) string {
	t.Helper()
	uid := strconv.Itoa(os.Getuid())
	name := uid
	if u, err := user.LookupId(uid); err == nil {
		name = u.Username
	}
	return "unix:" + name + "(" + uid + ")"
}

func checkBriefs(t *testing.T, rec *recorder, want []brief) {
	t.Helper()
	got := briefsOf(rec)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records (action, target, outcome):\n got %v\nwant %v", got, want)
	}
	caller := testCaller(t)
	for _, ev := range rec.all() {
		if ev.Actor != caller || !strings.HasPrefix(ev.Details["method"].(string), "/nhid.admin.v1.") {
			t.Errorf("record %+v: want actor %s and the method called", ev, caller)
		}
	}
}

func TestAuditChanges_Entries(t *testing.T) {
	h, rec := auditedHarness(t)
	ctx := testCtx(t)
	e := h.create(t, workloadEntry("db"))
	e.Selectors = []string{"unix:uid:1001"}
	e.FederatesWith = []string{"z.test", "partner.test"}
	if _, err := h.entries.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: e}); err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	if _, err := h.entries.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: e.GetId()}); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	_, err := h.entries.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: e.GetId()})
	requireCode(t, err, codes.NotFound)
	bad := workloadEntry("bad")
	bad.SpiffeId = "not a SPIFFE ID"
	resp, err := h.entries.BatchCreateEntries(ctx, &adminv1.BatchCreateEntriesRequest{Entries: []*typesv1.Entry{workloadEntry("a"), bad}})
	if err != nil {
		t.Fatalf("BatchCreateEntries: %v", err)
	}
	_, err = h.entries.BatchCreateEntries(ctx, &adminv1.BatchCreateEntriesRequest{})
	requireCode(t, err, codes.InvalidArgument)

	checkBriefs(t, rec, []brief{
		{"admin.entry.create", e.GetId(), audit.OutcomeSuccess},
		{"admin.entry.update", e.GetId(), audit.OutcomeSuccess},
		{"admin.entry.delete", e.GetId(), audit.OutcomeSuccess},
		{"admin.entry.delete", e.GetId(), audit.OutcomeFailure},
		{"admin.entry.create", resp.GetResults()[0].GetEntry().GetId(), audit.OutcomeSuccess},
		{"admin.entry.create", "", audit.OutcomeFailure},
		{"admin.entry.create", "", audit.OutcomeFailure},
	})
	all := rec.all()
	if got := all[1].Details["selectors"]; fmt.Sprint(got) != "[unix:uid:1001]" {
		t.Errorf("update record selectors = %v, want the new ones", got)
	}
	if got := all[1].Details["federates_with"]; fmt.Sprint(got) != "[partner.test z.test]" {
		t.Errorf("update record federates_with = %v, want the new, normalised ones", got)
	}
	if got, ok := all[0].Details["federates_with"]; ok {
		t.Errorf("create record federates_with = %v, want none for an entry without federation", got)
	}
	if all[5].Details["index"] != 1 || all[5].Details["spiffe_id"] != "not a SPIFFE ID" || all[5].Reason == "" {
		t.Errorf("refused batch item record = %+v, want its index, what it asked and why it failed", all[5])
	}
	if all[6].Details["count"] != 0 || all[6].Reason == "" {
		t.Errorf("refused batch record = %+v", all[6])
	}
}

func TestAuditChanges_Nodes(t *testing.T) {
	h, rec := auditedHarness(t)
	ctx := testCtx(t)
	h.seedNode(t, agentA, typesv1.NodeStatus_NODE_STATUS_ACTIVE)
	if _, err := h.nodes.BanNode(ctx, &adminv1.BanNodeRequest{SpiffeId: agentA}); err != nil {
		t.Fatalf("BanNode: %v", err)
	}
	_, err := h.nodes.EvictNode(ctx, &adminv1.EvictNodeRequest{SpiffeId: agentA})
	requireCode(t, err, codes.FailedPrecondition)
	if _, err := h.nodes.UnbanNode(ctx, &adminv1.UnbanNodeRequest{SpiffeId: agentA}); err != nil {
		t.Fatalf("UnbanNode: %v", err)
	}
	_, err = h.nodes.BanNode(ctx, &adminv1.BanNodeRequest{SpiffeId: "spiffe://example.org/not-a-node"})
	requireCode(t, err, codes.InvalidArgument)

	checkBriefs(t, rec, []brief{
		{"admin.node.ban", agentA, audit.OutcomeSuccess},
		{"admin.node.evict", agentA, audit.OutcomeFailure},
		{"admin.node.unban", agentA, audit.OutcomeSuccess},
		{"admin.node.ban", "", audit.OutcomeFailure},
	})
	ban := rec.all()[0]
	if ban.Details[logPreviousStatus] != "NODE_STATUS_ACTIVE" || ban.Details["status"] != "NODE_STATUS_BANNED" {
		t.Errorf("ban record details = %v", ban.Details)
	}
}

func TestAuditChanges_TokensNeverHoldTheSecret(t *testing.T) {
	h, rec := auditedHarness(t)
	ctx := testCtx(t)
	tok, err := h.tokens.GenerateToken(ctx, &adminv1.GenerateTokenRequest{})
	if err != nil {
		t.Fatalf("GenerateToken: %v", err)
	}
	// A whole token passed as an id is refused without being recorded.
	_, err = h.tokens.RevokeToken(ctx, &adminv1.RevokeTokenRequest{Id: tok.GetToken()})
	requireCode(t, err, codes.InvalidArgument)
	if _, err := h.tokens.RevokeToken(ctx, &adminv1.RevokeTokenRequest{Id: tok.GetId()}); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	checkBriefs(t, rec, []brief{
		{"admin.token.generate", tok.GetId(), audit.OutcomeSuccess},
		{"admin.token.revoke", "", audit.OutcomeFailure},
		{"admin.token.revoke", tok.GetId(), audit.OutcomeSuccess},
	})
	if gen := rec.all()[0]; gen.Details["spiffe_id"] != tok.GetSpiffeId() {
		t.Errorf("generate record details = %v, want the agent ID", gen.Details)
	}
	secret := tok.GetToken()[strings.Index(tok.GetToken(), ".")+1:]
	if all := recordsJSON(t, rec); strings.Contains(all, secret) {
		t.Errorf("a join token secret is in the audit records: %s", all)
	}
}

func TestAuditChanges_GrantRevoke(t *testing.T) {
	gh := newGrantHarness(t)
	rec := &recorder{}
	svc, err := New(Config{TrustDomain: td, Store: gh.store, Grants: gh.grants, Log: discardLog(), Audit: rec})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(shortTempDir(t), "audited.sock")
	lis, err := peercred.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(peercred.TransportCredentials()))
	svc.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	client := adminv1.NewGrantServiceClient(dial(t, socket))

	g := gh.issue(t, "w")
	ctx := testCtx(t)
	if _, err := client.RevokeGrant(ctx, &adminv1.RevokeGrantRequest{Id: g.GetId(), Reason: "leaked"}); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	_, err = client.RevokeGrant(ctx, &adminv1.RevokeGrantRequest{Id: g.GetId(), Reason: "again"})
	requireCode(t, err, codes.FailedPrecondition)
	checkBriefs(t, rec, []brief{
		{"admin.grant.revoke", g.GetId(), audit.OutcomeSuccess},
		{"admin.grant.revoke", g.GetId(), audit.OutcomeFailure},
	})
	if ev := rec.all()[0]; ev.Details["reason"] != "leaked" || ev.Details["spiffe_id"] != g.GetSpiffeId() {
		t.Errorf("revoke record details = %v", ev.Details)
	}
}

func TestCallerName_WithoutKernelCredentials(t *testing.T) {
	if got := callerName(context.Background()); got != unknownCaller {
		t.Errorf("callerName = %q, want %q", got, unknownCaller)
	}
}
