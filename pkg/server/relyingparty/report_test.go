package relyingparty

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"

	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/server/servertls"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// reportHarness is the endpoints with a real reputation service over the
// harness's bolt store.
type reportHarness struct {
	*harness
	rep *reputation.Service
}

func newReportHarness(t *testing.T, burst int) *reportHarness {
	t.Helper()
	h := newHarness(t)
	rep, err := reputation.New(reputation.Config{Store: h.store, Clock: h.clock, Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	src, err := servertls.New(servertls.Config{TrustDomain: td, Signer: h.ca, Bundles: servertls.NewBundles(h.store, td, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	rp, err := New(Config{
		TrustDomain: td, Bundles: servertls.NewBundles(h.store, td, nil), Certificate: src.Certificate, Grants: h.store,
		Log: discard(), Clock: h.clock, MaxBodyBytes: 4 << 10,
		Reputation: rep, ReportRate: rate.Limit(1.0 / 60), ReportBurst: burst,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.serve(rp) // h.url now points at these endpoints
	return &reportHarness{harness: h, rep: rep}
}

// post sends body to /report as c and decodes the answer.
func (h *harness) post(c *http.Client, contentType, body string) (int, map[string]any, http.Header) {
	h.t.Helper()
	resp, err := c.Post(h.url+PathReport, contentType, strings.NewReader(body))
	if err != nil {
		h.t.Fatalf("POST %s: %v", PathReport, err)
	}
	hdr := resp.Header
	code, out := decode(h.t, resp)
	return code, out, hdr
}

func (h *reportHarness) score(id spiffeid.ID) *typesv1.Reputation {
	h.t.Helper()
	r, err := h.rep.Get(context.Background(), id.String())
	if err != nil {
		h.t.Fatalf("reputation of %s: %v", id, err)
	}
	return r
}

func TestReport_RecordsMisuseAgainstTheSubjectWithTheReporter(t *testing.T) {
	h := newReportHarness(t, 10)
	_, err := h.store.CreateGrant(context.Background(), &typesv1.Grant{
		Id: "g-owned", SpiffeId: workload.String(), EntryId: "entry-1", Node: agentID, Owner: "ana@example.org",
		Scopes: []string{"repo:read"}, Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE,
		CreatedAt: h.clock.Now().Unix(), ExpiresAt: h.clock.Now().Add(time.Hour).Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	code, got, _ := h.post(h.client, "application/json",
		`{"spiffe_id":"spiffe://example.org/ci/builder","kind":"out_of_scope","grant_id":"g-owned","reason":"pushed to main with repo:read"}`)
	if code != http.StatusAccepted || got["status"] != "recorded" {
		t.Fatalf("answer %d %v, want 202 recorded", code, got)
	}
	r := h.score(workload)
	e := r.Events[0]
	gotFields := []any{r.Score, r.Owner, e.Kind, e.Reporter, e.GrantId, e.Reason}
	want := []any{350.0, "ana@example.org", "misuse_reported", rpID.String(), "g-owned", "out_of_scope: pushed to main with repo:read"}
	if diff := cmp.Diff(want, gotFields); diff != "" {
		t.Errorf("recorded event (-want +got):\n%s", diff)
	}
	// Without a grant id.
	if code, got, _ := h.post(h.client, "application/json; charset=utf-8",
		`{"spiffe_id":"spiffe://example.org/ci/builder","kind":"misuse","reason":"replayed a token"}`); code != http.StatusAccepted {
		t.Fatalf("report without grant_id: %d %v", code, got)
	}
	if s := h.score(workload).Score; s != 200 {
		t.Errorf("score after two reports = %v, want 200", s)
	}
}

func TestReport_BadInputIsRefusedAndRecordsNothing(t *testing.T) {
	h := newReportHarness(t, 100)
	h.grant("g-1", time.Hour) // workload's
	other := spiffeid.RequireFromString("spiffe://example.org/other")
	good := `"spiffe_id":"spiffe://example.org/other","kind":"misuse","reason":"r"`
	tests := []struct {
		name        string
		contentType string
		body        string
		wantCode    int
		wantDesc    string
	}{
		{"form body", "application/x-www-form-urlencoded", "spiffe_id=x", 415, "application/json"},
		{"unknown field", "application/json", `{` + good + `,"score":0}`, 400, `unknown field "score"`},
		{"two objects", "application/json", `{` + good + `}{}`, 400, "data after the JSON object"},
		{"not JSON", "application/json", `spiffe_id: x`, 400, "not one JSON report object"},
		{"too large", "application/json", `{` + good + `,"grant_id":"` + strings.Repeat("g", 5000) + `"}`, 413, "exceeds 4096 bytes"},
		{"no subject", "application/json", `{"kind":"misuse","reason":"r"}`, 400, "spiffe_id: required"},
		{"not a SPIFFE ID", "application/json", `{"spiffe_id":"https://example.org/x","kind":"misuse","reason":"r"}`, 400, "spiffe_id: not a SPIFFE ID"},
		{"other trust domain", "application/json", `{"spiffe_id":"spiffe://other.org/x","kind":"misuse","reason":"r"}`, 400, "not in the trust domain example.org"},
		{"nhid's own ID", "application/json", `{"spiffe_id":"spiffe://example.org/nhid/server","kind":"misuse","reason":"r"}`, 400, "nhid's own identities"},
		{"itself", "application/json", `{"spiffe_id":"` + rpID.String() + `","kind":"misuse","reason":"r"}`, 400, "cannot report itself"},
		{"bad kind", "application/json", `{"spiffe_id":"spiffe://example.org/other","kind":"rude","reason":"r"}`, 400, `kind: must be "misuse" or "out_of_scope"`},
		{"no reason", "application/json", `{"spiffe_id":"spiffe://example.org/other","kind":"misuse","reason":"  "}`, 400, "reason: required"},
		{"long reason", "application/json", `{"spiffe_id":"spiffe://example.org/other","kind":"misuse","reason":"` + strings.Repeat("r", 1001) + `"}`, 400, "reason: is 1001 bytes"},
		{"unknown grant", "application/json", `{` + good + `,"grant_id":"nope"}`, 400, "no grant with this id"},
		{"another subject's grant", "application/json", `{` + good + `,"grant_id":"g-1"}`, 400, "no grant with this id"},
		{"every problem at once", "application/json", `{"spiffe_id":"","kind":"","reason":""}`, 400, "spiffe_id: required; kind: must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, got, _ := h.post(h.client, tt.contentType, tt.body)
			desc, _ := got["error_description"].(string)
			if code != tt.wantCode || !strings.Contains(desc, tt.wantDesc) {
				t.Fatalf("answer %d %v, want %d saying %q", code, got, tt.wantCode, tt.wantDesc)
			}
		})
	}
	for _, id := range []spiffeid.ID{other, workload, rpID} {
		if _, err := h.rep.Get(context.Background(), id.String()); err == nil {
			t.Errorf("a refused report left a score for %s", id)
		}
	}
}

func TestReport_IsRateLimitedPerReporter(t *testing.T) {
	h := newReportHarness(t, 2)
	body := `{"spiffe_id":"spiffe://example.org/ci/builder","kind":"misuse","reason":"r"}`
	for i := range 2 {
		if code, got, _ := h.post(h.client, "application/json", body); code != http.StatusAccepted {
			t.Fatalf("report %d: %d %v", i+1, code, got)
		}
	}
	code, got, hdr := h.post(h.client, "application/json", body)
	if code != http.StatusTooManyRequests || got["error"] != "rate_limited" || hdr.Get("Retry-After") != "60" {
		t.Fatalf("third report: %d %v Retry-After %q, want 429 with Retry-After 60", code, got, hdr.Get("Retry-After"))
	}
	// Another reporter has its own budget.
	other := h.httpClient(h.svid(h.ca, spiffeid.RequireFromString("spiffe://example.org/other/rp")))
	if code, got, _ := h.post(other, "application/json", body); code != http.StatusAccepted {
		t.Fatalf("another reporter: %d %v", code, got)
	}
	h.clock.Add(time.Minute)
	if code, got, _ := h.post(h.client, "application/json", body); code != http.StatusAccepted {
		t.Fatalf("a minute later: %d %v", code, got)
	}
	if s := h.score(workload).Score; s != 0 {
		t.Errorf("score after four reports = %v, want 0", s)
	}
}

func TestReport_NeedsAnSVIDOfTheTrustDomain(t *testing.T) {
	h := newReportHarness(t, 10)
	resp, err := h.httpClient(nil).Post(h.url+PathReport, "application/json", bytes.NewReader([]byte(`{}`)))
	if err == nil {
		resp.Body.Close()
	}
	wantTLSRefusal(t, err)
	agent := h.httpClient(h.svid(h.ca, spiffeid.RequireFromString(agentID)))
	code, got, _ := h.post(agent, "application/json", `{"spiffe_id":"spiffe://example.org/ci/builder","kind":"misuse","reason":"r"}`)
	if code != http.StatusForbidden {
		t.Errorf("an agent's report: %d %v, want 403", code, got)
	}
}

func TestReport_IsNotServedWithoutReputation(t *testing.T) {
	h := newHarness(t)
	resp, err := h.client.Post(h.url+PathReport, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST %s without reputation: %d, want 404", PathReport, resp.StatusCode)
	}
}
