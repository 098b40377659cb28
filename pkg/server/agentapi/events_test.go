package agentapi

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/reputation"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

func notEntitled(spiffeID string, pid int32) *agentv1.WorkloadEvent {
	return &agentv1.WorkloadEvent{
		Time: 1_700_000_000_000_000_000, Kind: eventNotEntitled, Pid: pid, Uid: 1000, Gid: 1000,
		Path: "/usr/bin/worker", SpiffeId: spiffeID, Method: "/SpiffeWorkloadAPI/FetchJWTSVID",
		Reason: "asked for an identity it does not hold",
	}
}

func report(t *testing.T, h *harness, a *agent, events ...*agentv1.WorkloadEvent) error {
	t.Helper()
	_, err := h.eventsClient(a).ReportWorkloadEvents(context.Background(), &agentv1.ReportWorkloadEventsRequest{Events: events})
	return err
}

func TestReportWorkloadEvents_RecordsEveryEventAndMovesOnlyIdentitiesTheNodeServes(t *testing.T) {
	rec, rep := &recorder{}, &observed{}
	h := newHarness(t, withAudit(rec, rep))
	a, b := h.attest(), h.attest()
	served, elsewhere := workload("served", a.id.String()), workload("elsewhere", b.id.String())
	served.Owner, elsewhere.Owner = "ana@example.org", "bo@example.org"
	es := h.createEntries(served, elsewhere)
	failed := &agentv1.WorkloadEvent{Kind: eventAttestationFailed, Pid: 43, Uid: 1001, Gid: 1001, Reason: "workload attestation failed: unix: no such process"}
	err := report(t, h, a,
		notEntitled(es[0].GetSpiffeId(), 42),
		notEntitled(es[1].GetSpiffeId(), 42), // another node's identity: no smearing
		failed,
		notEntitled(es[0].GetSpiffeId(), 44),
		notEntitled("spiffe://example.org/made-up", 45),
	)
	if err != nil {
		t.Fatalf("ReportWorkloadEvents: %v", err)
	}
	recs := rec.of(audit.ActionWorkloadAttestFail)
	if len(recs) != 5 {
		t.Fatalf("%d workload.attest records, want 5: %+v", len(recs), recs)
	}
	first := recs[0]
	want := audit.Event{
		Actor: a.id.String(), OnBehalfOf: "ana@example.org", Action: audit.ActionWorkloadAttestFail,
		Target: es[0].GetSpiffeId(), Outcome: audit.OutcomeDenied, Reason: "asked for an identity it does not hold",
	}
	if diff := cmp.Diff(want, first, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Details" }, cmp.Ignore())); diff != "" {
		t.Errorf("first record (-want +got):\n%s", diff)
	}
	for key, want := range map[string]string{
		"kind": eventNotEntitled, "pid": "42", "uid": "1000", "gid": "1000", "path": "/usr/bin/worker",
		"method": "/SpiffeWorkloadAPI/FetchJWTSVID", "served": "true", "entry_id": es[0].GetId(),
		"seen_at": "2023-11-14T22:13:20Z",
	} {
		if got := detail(first, key); got != want {
			t.Errorf("details[%s] = %q, want %q", key, got, want)
		}
	}
	if recs[1].OnBehalfOf != "" || detail(recs[1], "served") != "false" {
		t.Errorf("record of another node's identity = %+v, want no owner and served=false", recs[1])
	}
	if recs[2].Target != "pid:43 uid:1001" || recs[2].Outcome != audit.OutcomeFailure || recs[2].Reason != failed.GetReason() {
		t.Errorf("attestation failure record = %+v", recs[2])
	}
	wantRep := []reputation.Event{{
		SPIFFEID: es[0].GetSpiffeId(), Owner: "ana@example.org", Kind: reputation.KindAttestationFailed, Reporter: a.id.String(),
		Reason: "2 workload attestation failure(s) naming this identity reported by node " + a.id.String(),
	}}
	if diff := cmp.Diff(wantRep, rep.all()); diff != "" {
		t.Errorf("reputation events (-want +got):\n%s", diff)
	}

	// Within reputationEvery, the node moves the identity's score no more.
	if err := report(t, h, a, notEntitled(es[0].GetSpiffeId(), 46)); err != nil {
		t.Fatalf("ReportWorkloadEvents: %v", err)
	}
	if got := len(rep.all()); got != 1 {
		t.Errorf("%d reputation events after a second report, want still 1", got)
	}
	if got := len(rec.of(audit.ActionWorkloadAttestFail)); got != 6 {
		t.Errorf("%d records after a second report, want 6", got)
	}
}

func TestReportWorkloadEvents_BadBatchIsRefusedWholeAndRecordsNothing(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, withAudit(rec, nil))
	a := h.attest()
	good := notEntitled("spiffe://example.org/w", 1)
	tooMany := make([]*agentv1.WorkloadEvent, MaxWorkloadEvents+1)
	for i := range tooMany {
		tooMany[i] = good
	}
	tests := []struct {
		name   string
		events []*agentv1.WorkloadEvent
		msg    string
	}{
		{"too many", tooMany, "events: 501 events, at most 500"},
		{"unknown kind", []*agentv1.WorkloadEvent{good, {Kind: "sabotage"}}, `events[1].kind: "sabotage" is not one of`},
		{"negative pid", []*agentv1.WorkloadEvent{{Kind: eventAttestationFailed, Pid: -1}}, "events[0].pid: -1 is negative"},
		{"long path", []*agentv1.WorkloadEvent{{Kind: eventAttestationFailed, Path: strings.Repeat("a", maxEventPath+1)}}, "events[0].path: 4097 bytes"},
		{"bad SPIFFE ID", []*agentv1.WorkloadEvent{{Kind: eventNotEntitled, SpiffeId: "https://example.org/w"}}, "events[0].spiffe_id: not a SPIFFE ID"},
		{"long reason", []*agentv1.WorkloadEvent{{Kind: eventNotEntitled, Reason: strings.Repeat("r", maxEventReason+1)}}, "events[0].reason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, report(t, h, a, tt.events...), codes.InvalidArgument, tt.msg)
		})
	}
	if got := rec.of(audit.ActionWorkloadAttestFail); len(got) != 0 {
		t.Errorf("refused batches left %d records", len(got))
	}
}

func TestReportWorkloadEvents_AFloodIsCutAtTheNodesRate(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, withAudit(rec, nil))
	h.svc.events.mu.Lock()
	h.svc.events.rate, h.svc.events.burst = 0, 3
	h.svc.events.mu.Unlock()
	a, b := h.attest(), h.attest()
	flood := make([]*agentv1.WorkloadEvent, 5)
	for i := range flood {
		flood[i] = notEntitled("", int32(100+i))
	}
	if err := report(t, h, a, flood...); err != nil {
		t.Fatalf("ReportWorkloadEvents: %v", err)
	}
	if got := len(rec.of(audit.ActionWorkloadAttestFail)); got != 3 {
		t.Errorf("%d records of a flood of 5 at burst 3, want 3", got)
	}
	if got := testutil.ToFloat64(h.svc.metrics.workloadEvents.WithLabelValues(eventNotEntitled, "rate_limited")); got != 2 {
		t.Errorf("rate_limited = %v, want 2", got)
	}
	// Another node has its own budget.
	if err := report(t, h, b, notEntitled("", 7)); err != nil {
		t.Fatalf("ReportWorkloadEvents: %v", err)
	}
	if got := len(rec.of(audit.ActionWorkloadAttestFail)); got != 4 {
		t.Errorf("%d records after another node's report, want 4", got)
	}
}

func TestReportWorkloadEvents_NeedsAnAgentSVID(t *testing.T) {
	h := newHarness(t)
	conn := h.anonymousGrantClient()
	_, err := conn.ReportWorkloadEvents(context.Background(), &agentv1.ReportWorkloadEventsRequest{})
	wantCode(t, err, codes.Unauthenticated, "agent SVID required")
}

func TestReportWorkloadEvents_IsServedWithGrants(t *testing.T) {
	gh := newGrantHarness(t)
	a := gh.attest()
	_, err := gh.grantClient(a.svid).ReportWorkloadEvents(context.Background(),
		&agentv1.ReportWorkloadEventsRequest{Events: []*agentv1.WorkloadEvent{notEntitled("", 9)}})
	if err != nil {
		t.Fatalf("ReportWorkloadEvents with grants served: %v", err)
	}
}
