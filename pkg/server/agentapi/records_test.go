package agentapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/attestors/jointoken"
	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/reputation"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

func TestAttest_RecordsSuccessAndFailureWithoutTheToken(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, withAudit(rec, nil))
	token := h.newToken("")
	params := func() *agentv1.AttestParams {
		return &agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte(token), Csr: newCSR(t, newKey(t), "")}
	}
	res, err := h.attestParams(params(), nil)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	ok := rec.wait(t, audit.ActionNodeAttest, 1)[0]
	if ok.Actor != res.GetSpiffeId() || ok.Target != res.GetSpiffeId() || ok.Outcome != audit.OutcomeSuccess {
		t.Errorf("success record = %+v, want actor and target %s, outcome success", ok, res.GetSpiffeId())
	}
	leaf := leafOf(t, res.GetSvidChain())
	if got, want := detail(ok, "serial"), serialHex(leaf); got != want {
		t.Errorf("serial = %q, want %q", got, want)
	}
	if detail(ok, "attestor") != jointoken.Type || detail(ok, "selectors_count") != "0" || detail(ok, "address") == "" {
		t.Errorf("details = %v, want attestor join_token, its (no) selectors and the address", ok.Details)
	}

	// The token is single use: a second attestation with it is refused.
	_, err = h.attestParams(params(), nil)
	wantCode(t, err, codes.PermissionDenied, "already used")
	refused := rec.wait(t, audit.ActionNodeAttest, 2)[1]
	if refused.Outcome != audit.OutcomeDenied || !strings.HasPrefix(refused.Actor, jointoken.Type+"@127.0.0.1:") ||
		refused.Target != "" || !strings.Contains(refused.Reason, "join token already used") {
		t.Errorf("refusal record = %+v, want denied by join_token@<address> with the reason", refused)
	}

	_, err = h.attestParams(&agentv1.AttestParams{Attestor: "forged", Payload: []byte(token), Csr: newCSR(t, newKey(t), "")}, nil)
	wantCode(t, err, codes.InvalidArgument, "unknown attestor")
	invalid := rec.wait(t, audit.ActionNodeAttest, 3)[2]
	if invalid.Outcome != audit.OutcomeFailure || !strings.HasPrefix(invalid.Actor, "unknown@") || detail(invalid, "attestor_requested") != "forged" {
		t.Errorf("invalid attestation record = %+v", invalid)
	}
	secret := token[strings.LastIndex(token, ".")+1:]
	if all := rec.json(t); strings.Contains(all, secret) {
		t.Errorf("a join token secret is in the audit records: %s", all)
	}
}

func TestAttest_FailureRecordsAreRateLimited(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, withAudit(rec, nil))
	h.svc.attestFailures.SetLimit(0)
	h.svc.attestFailures.SetBurst(1)
	for range 3 {
		_, err := h.attestParams(&agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte("x.y"), Csr: newCSR(t, newKey(t), "")}, nil)
		wantCode(t, err, codes.PermissionDenied, "attestation failed")
	}
	waitFor(t, "two dropped records", func() bool { return testutil.ToFloat64(h.svc.metrics.attestRecordsDropped) == 2 })
	if got := rec.of(audit.ActionNodeAttest); len(got) != 1 {
		t.Errorf("%d records of failed attestations, want 1 (the burst): %+v", len(got), got)
	}
}

// mintedSVID is one item of an svid.mint record's svids.
type mintedSVID struct {
	EntryID  string `json:"entry_id"`
	SPIFFEID string `json:"spiffe_id"`
	Serial   string `json:"serial"`
}

func TestMintX509SVIDs_OneRecordPerBatch(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, withAudit(rec, nil))
	a := h.attest()
	first, second := workload("a", a.id.String()), workload("b", a.id.String())
	first.Owner, second.Owner = "ana@example.org", "ana@example.org"
	es := h.createEntries(first, second)
	resp, err := a.client.MintX509SVIDs(context.Background(), &agentv1.MintX509SVIDsRequest{Params: []*agentv1.X509SVIDParams{
		{EntryId: es[0].GetId(), Csr: newCSR(t, newKey(t), "")},
		{EntryId: "missing", Csr: newCSR(t, newKey(t), "")},
		{EntryId: es[1].GetId(), Csr: newCSR(t, newKey(t), "")},
	}})
	if err != nil {
		t.Fatalf("MintX509SVIDs: %v", err)
	}
	recs := rec.of(audit.ActionSVIDMint)
	if len(recs) != 1 {
		t.Fatalf("%d svid.mint records, want one for the batch: %+v", len(recs), recs)
	}
	ev := recs[0]
	if ev.Actor != a.id.String() || ev.Outcome != audit.OutcomeSuccess || ev.OnBehalfOf != "ana@example.org" || ev.Target != "" {
		t.Errorf("record = %+v, want the node as actor, success, on behalf of the owner, no single target", ev)
	}
	for key, want := range map[string]string{"kind": "x509", "requested": "3", "issued": "2", "failed": "1"} {
		if got := detail(ev, key); got != want {
			t.Errorf("details[%s] = %q, want %q", key, got, want)
		}
	}
	var svids []mintedSVID
	if err := json.Unmarshal([]byte(detail(ev, "svids")), &svids); err != nil {
		t.Fatalf("svids: %v", err)
	}
	var want []mintedSVID
	for i, r := range []*agentv1.X509SVIDResult{resp.GetResults()[0], resp.GetResults()[2]} {
		leaf := leafOf(t, r.GetSvidChain())
		want = append(want, mintedSVID{EntryID: es[i].GetId(), SPIFFEID: es[i].GetSpiffeId(), Serial: serialHex(leaf)})
	}
	if diff := cmp.Diff(want, svids); diff != "" {
		t.Errorf("svids (-want +got):\n%s", diff)
	}
	if got := detail(ev, "failures"); !strings.Contains(got, `"entry_id":"missing"`) || !strings.Contains(got, "NotFound") {
		t.Errorf("failures = %s, want the missing entry with NotFound", got)
	}
}

func TestMintJWTSVID_RecordsIssueAndRefusal(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, withAudit(rec, nil))
	a, b := h.attest(), h.attest()
	es := h.createEntries(workload("mine", a.id.String()), workload("theirs", b.id.String()))
	ctx := context.Background()
	if _, err := a.client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: es[0].GetId(), Audience: []string{"rp"}}); err != nil {
		t.Fatalf("MintJWTSVID: %v", err)
	}
	_, err := a.client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: es[1].GetId(), Audience: []string{"rp"}})
	wantCode(t, err, codes.PermissionDenied, "not authorised")
	recs := rec.of(audit.ActionSVIDMint)
	if len(recs) != 2 {
		t.Fatalf("%d svid.mint records, want 2: %+v", len(recs), recs)
	}
	issued, refused := recs[0], recs[1]
	if issued.Target != es[0].GetSpiffeId() || issued.Outcome != audit.OutcomeSuccess || detail(issued, "kind") != "jwt" ||
		detail(issued, "jti") == "" || detail(issued, "audience") != `["rp"]` {
		t.Errorf("issue record = %+v", issued)
	}
	if refused.Outcome != audit.OutcomeDenied || refused.Actor != a.id.String() || !strings.Contains(refused.Reason, "not authorised") {
		t.Errorf("refusal record = %+v", refused)
	}
}

func TestRenew_RecordsTheNewAgentSVID(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, withAudit(rec, nil))
	a := h.attest()
	old := renew(t, h, a)
	recs := rec.of(audit.ActionSVIDMint)
	if len(recs) != 1 {
		t.Fatalf("%d svid.mint records, want 1: %+v", len(recs), recs)
	}
	ev := recs[0]
	if ev.Actor != a.id.String() || ev.Target != a.id.String() || ev.Outcome != audit.OutcomeSuccess || detail(ev, "kind") != "agent_x509" {
		t.Errorf("record = %+v", ev)
	}
	if detail(ev, "previous_serial") != serialHex(old.Certificates[0]) || detail(ev, "serial") != serialHex(a.svid.Certificates[0]) {
		t.Errorf("serials in %v, want previous %s and new %s", ev.Details, serialHex(old.Certificates[0]), serialHex(a.svid.Certificates[0]))
	}
}

func TestReattest_TrustChangesAreRecordedAndRefusalsCostReputation(t *testing.T) {
	rec, rep := &recorder{}, &observed{}
	h, logs := newReattestHarness(t, func(c *Config) { c.Audit, c.Reputation = rec, rep })
	a := h.attestReattesting("node-audit")
	r := openReattest(t, a, tamperedAnswer)
	waitNode(t, h, a.id, "untrusted", untrusted)
	r.setAnswer(goodAnswer("initial"))
	waitNode(t, h, a.id, "trusted again", active)

	recs := rec.wait(t, audit.ActionNodeReattest, 2)
	if recs[0].Outcome != audit.OutcomeFailure || recs[0].Target != a.id.String() || recs[0].Actor != a.id.String() ||
		recs[0].Reason != "continuous attestation failed: measured state changed" {
		t.Errorf("untrusted record = %+v", recs[0])
	}
	if recs[1].Outcome != audit.OutcomeSuccess || detail(recs[1], "event") != auditNodeTrusted {
		t.Errorf("trusted record = %+v", recs[1])
	}
	var failures []reputation.Event
	for _, ev := range rep.all() {
		if ev.SPIFFEID == a.id.String() && ev.Kind == reputation.KindAttestationFailed && ev.Reporter == reporterServer {
			failures = append(failures, ev)
		}
	}
	if len(failures) == 0 {
		t.Errorf("reputation events = %+v, want an attestation failure of %s", rep.all(), a.id)
	}
	// The log line stays for log-based alerting.
	if got := auditLines(logs.String(), auditNodeUntrusted); len(got) != 1 {
		t.Errorf("audit log lines of %s = %q, want one", auditNodeUntrusted, got)
	}
}
