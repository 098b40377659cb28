package agentapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/grant"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestRequestGrant_AllowSendsOneGrantedStatusWithAVerifiableToken(t *testing.T) {
	h := newGrantHarness(t)
	a := h.attest()
	e := h.createEntries(ciEntry("ci/builder", a.id.String()))[0]
	got, err := requestGrant(t, h.grantClient(a.svid), e.GetId(), grantRequest("repo:read", "admin"))
	if err != nil {
		t.Fatalf("RequestGrant: %v", err)
	}
	if len(got) != 1 || got[0].GetState() != grantv1.GrantState_GRANT_STATE_GRANTED {
		t.Fatalf("statuses %v, want one GRANTED", got)
	}
	st := got[0]
	if diff := cmp.Diff([]string{"repo:read"}, st.GetScopes()); diff != "" || st.GetRule() != "ci" || st.GetGrantId() == "" {
		t.Errorf("granted: scopes diff %s, rule %q, id %q", diff, st.GetRule(), st.GetGrantId())
	}
	parsed, err := jwt.ParseSigned(st.GetToken(), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	var claims struct {
		Txn   string `json:"txn"`
		Sub   string `json:"sub"`
		ReqWL string `json:"req_wl"`
		Exp   int64  `json:"exp"`
	}
	if err := parsed.Claims(h.ca.JWTAuthorities()[parsed.Headers[0].KeyID], &claims); err != nil {
		t.Fatalf("token does not verify with the JWT bundle: %v", err)
	}
	if parsed.Headers[0].ExtraHeaders[jose.HeaderType] != ca.TxnTokenType {
		t.Errorf("typ %v, want %s", parsed.Headers[0].ExtraHeaders[jose.HeaderType], ca.TxnTokenType)
	}
	want := [4]any{st.GetGrantId(), e.GetSpiffeId(), a.id.String(), st.GetExpiresAt()}
	if diff := cmp.Diff(want, [4]any{claims.Txn, claims.Sub, claims.ReqWL, claims.Exp}); diff != "" {
		t.Errorf("txn, sub, req_wl, exp (-want +got):\n%s", diff)
	}
}

func TestRequestGrant_DenySendsOneDeniedStatus(t *testing.T) {
	h := newGrantHarness(t)
	a := h.attest()
	e := ciEntry("ci/builder", a.id.String())
	e.Purpose = "reporting"
	e = h.createEntries(e)[0]
	got, err := requestGrant(t, h.grantClient(a.svid), e.GetId(), grantRequest("repo:read"))
	if err != nil {
		t.Fatalf("RequestGrant: %v", err)
	}
	if len(got) != 1 || got[0].GetState() != grantv1.GrantState_GRANT_STATE_DENIED || got[0].GetToken() != "" || got[0].GetReason() == "" {
		t.Fatalf("statuses %v, want one DENIED with a reason and no token", got)
	}
}

func TestRequestGrant_PendingApprovalEndsDeniedWhenItTimesOut(t *testing.T) {
	h := newGrantHarness(t, func(c *grant.Config) { c.ApprovalTimeout = grant.MinApprovalTimeout })
	a := h.attest()
	e := h.createEntries(ciEntry("ci/deployer", a.id.String()))[0]
	r := grantRequest("deploy")
	r.Resource = "prod/payments"
	got, err := requestGrant(t, h.grantClient(a.svid), e.GetId(), r)
	if err != nil {
		t.Fatalf("RequestGrant: %v", err)
	}
	states := make([]grantv1.GrantState, len(got))
	for i, s := range got {
		states[i] = s.GetState()
	}
	want := []grantv1.GrantState{grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL, grantv1.GrantState_GRANT_STATE_DENIED}
	if diff := cmp.Diff(want, states); diff != "" {
		t.Fatalf("states (-want +got):\n%s", diff)
	}
	if got[0].GetReason() != "production needs a second pair of eyes" || got[1].GetReason() != "approval timed out" {
		t.Errorf("reasons %q then %q", got[0].GetReason(), got[1].GetReason())
	}
	if got[0].GetGrantId() != got[1].GetGrantId() {
		t.Errorf("grant ids %q then %q, want the same", got[0].GetGrantId(), got[1].GetGrantId())
	}
}

func TestRequestGrant_RevokingAPendingGrantEndsTheStream(t *testing.T) {
	h := newGrantHarness(t)
	a := h.attest()
	e := h.createEntries(ciEntry("ci/deployer", a.id.String()))[0]
	r := grantRequest("deploy")
	r.Resource = "prod/payments"
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := h.grantClient(a.svid).RequestGrant(ctx, &agentv1.AgentGrantRequest{EntryId: e.GetId(), Request: r})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetState() != grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL {
		t.Fatalf("first status %v, %v; want PENDING_APPROVAL", first, err)
	}
	if _, err := h.grants.Revoke(ctx, first.GetGrantId(), "change freeze", "uid:0"); err != nil {
		t.Fatal(err)
	}
	last, err := stream.Recv()
	if err != nil {
		t.Fatalf("second Recv: %v", err)
	}
	if last.GetState() != grantv1.GrantState_GRANT_STATE_DENIED || !strings.Contains(last.GetReason(), "revoked") || !strings.Contains(last.GetReason(), "change freeze") {
		t.Errorf("final status %v, want DENIED saying it was revoked for the change freeze", last)
	}
}

func TestRequestGrant_BadInputIsInvalidArgumentAndStoresNothing(t *testing.T) {
	h := newGrantHarness(t)
	a := h.attest()
	e := h.createEntries(ciEntry("ci/builder", a.id.String()))[0]
	client := h.grantClient(a.svid)
	tests := []struct {
		name string
		req  *agentv1.AgentGrantRequest
		want string
	}{
		{"no request", &agentv1.AgentGrantRequest{EntryId: e.GetId()}, "request: required"},
		{"no entry", &agentv1.AgentGrantRequest{Request: grantRequest("repo:read")}, "entry_id: required"},
		{"oversized reason", withGrant(e, func(r *grantv1.GrantRequest) { r.Reason = strings.Repeat("x", 1025) }), "reason: is 1025 bytes"},
		{"oversized details", withGrant(e, func(r *grantv1.GrantRequest) {
			r.AuthorizationDetails = `[{"type":"t","x":"` + strings.Repeat("a", 16<<10) + `"}]`
		}), "authorization_details: is"},
		{"malformed scope", withGrant(e, func(r *grantv1.GrantRequest) { r.Scopes = []string{"repo read"} }), "scopes[0]: holds ' '"},
		{"zero ttl", withGrant(e, func(r *grantv1.GrantRequest) { r.Ttl = 0 }), "ttl: 0 s"},
		{"ttl above the maximum", withGrant(e, func(r *grantv1.GrantRequest) { r.Ttl = 3601 }), "ttl: 3601 s exceeds the maximum of 3600 s"},
		{"details not an array", withGrant(e, func(r *grantv1.GrantRequest) { r.AuthorizationDetails = `{"type":"x"}` }), "must be a JSON array of objects"},
		{"details without type", withGrant(e, func(r *grantv1.GrantRequest) { r.AuthorizationDetails = `[{"actions":[]}]` }), "authorization_details[0].type: required"},
	}
	before := h.storedGrants()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			stream, err := client.RequestGrant(ctx, tc.req)
			if err == nil {
				_, err = stream.Recv()
			}
			wantCode(t, err, codes.InvalidArgument, tc.want)
		})
	}
	if diff := cmp.Diff(before, h.storedGrants(), protocmp.Transform()); diff != "" {
		t.Errorf("refused requests changed the stored grants (-before +after):\n%s", diff)
	}
}

func withGrant(e *typesv1.Entry, mod func(*grantv1.GrantRequest)) *agentv1.AgentGrantRequest {
	r := grantRequest("repo:read")
	mod(r)
	return &agentv1.AgentGrantRequest{EntryId: e.GetId(), Request: r}
}

func TestRequestGrant_EntryMustBeAuthorisedForTheNode(t *testing.T) {
	h := newGrantHarness(t)
	a, b := h.attest(), h.attest()
	other := h.createEntries(ciEntry("ci/other", b.id.String()))[0]
	expired := ciEntry("ci/expired", a.id.String())
	expired.ExpiresAt = time.Now().Add(-time.Minute).Unix()
	expired = h.createEntries(expired)[0]
	alias := h.createEntries(&typesv1.Entry{SpiffeId: "spiffe://example.org/nodes/all", ParentId: agentid.Server(td).String(), Selectors: []string{"join_token:x"}})[0]
	client := h.grantClient(a.svid)
	tests := []struct {
		name    string
		entryID string
		code    codes.Code
		msg     string
	}{
		{"another node's entry", other.GetId(), codes.PermissionDenied, "is not authorised for this node"},
		{"expired entry", expired.GetId(), codes.PermissionDenied, "has expired"},
		{"node alias", alias.GetId(), codes.PermissionDenied, "is a node alias"},
		{"unknown entry", "no-such-entry", codes.NotFound, "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := requestGrant(t, client, tc.entryID, grantRequest("repo:read"))
			wantCode(t, err, tc.code, tc.msg)
		})
	}
	if n := len(h.storedGrants()); n != 0 {
		t.Errorf("refused requests stored %d grants", n)
	}
}

func TestReleaseAndListGrants_AreScopedToTheCallersEntries(t *testing.T) {
	h := newGrantHarness(t)
	a, b := h.attest(), h.attest()
	mine := h.createEntries(ciEntry("ci/mine", a.id.String()), ciEntry("ci/sibling", a.id.String()))
	theirs := h.createEntries(ciEntry("ci/theirs", b.id.String()))[0]
	client := h.grantClient(a.svid)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	issue := func(c agentv1.AgentGrantServiceClient, id string) string {
		t.Helper()
		st, err := requestGrant(t, c, id, grantRequest("repo:read"))
		if err != nil || len(st) != 1 {
			t.Fatalf("RequestGrant: %v %v", st, err)
		}
		return st[0].GetGrantId()
	}
	g1, g2 := issue(client, mine[0].GetId()), issue(client, mine[1].GetId())
	issue(h.grantClient(b.svid), theirs.GetId())

	list, err := client.ListGrants(ctx, &agentv1.AgentListGrantsRequest{EntryIds: []string{mine[0].GetId()}})
	if err != nil || len(list.GetGrants()) != 1 || list.GetGrants()[0].GetId() != g1 {
		t.Fatalf("ListGrants(mine) = %v, %v; want %s only", list.GetGrants(), err, g1)
	}
	_, err = client.ListGrants(ctx, &agentv1.AgentListGrantsRequest{EntryIds: []string{theirs.GetId()}})
	wantCode(t, err, codes.PermissionDenied, "is not authorised for this node")
	_, err = client.ReleaseGrant(ctx, &agentv1.AgentReleaseGrantRequest{EntryIds: []string{mine[0].GetId()}, GrantId: g2})
	wantCode(t, err, codes.NotFound, "grant not found")
	_, err = client.ReleaseGrant(ctx, &agentv1.AgentReleaseGrantRequest{EntryIds: []string{mine[0].GetId()}, GrantId: "unknown"})
	wantCode(t, err, codes.NotFound, "grant not found")
	_, err = client.ReleaseGrant(ctx, &agentv1.AgentReleaseGrantRequest{EntryIds: []string{mine[0].GetId()}})
	wantCode(t, err, codes.InvalidArgument, "grant_id: required")

	if _, err := client.ReleaseGrant(ctx, &agentv1.AgentReleaseGrantRequest{EntryIds: []string{mine[0].GetId()}, GrantId: g1}); err != nil {
		t.Fatalf("ReleaseGrant: %v", err)
	}
	list, err = client.ListGrants(ctx, &agentv1.AgentListGrantsRequest{EntryIds: []string{mine[0].GetId(), mine[1].GetId()}})
	if err != nil || len(list.GetGrants()) != 1 || list.GetGrants()[0].GetId() != g2 {
		t.Fatalf("ListGrants after release = %v, %v; want %s only", list.GetGrants(), err, g2)
	}
	g, err := h.store.GetGrant(ctx, g1)
	if err != nil || g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_RELEASED || g.GetEndedBy() != a.id.String() {
		t.Errorf("released grant: %v ended by %q, %v", g.GetStatus(), g.GetEndedBy(), err)
	}
}

func TestGrantService_RequiresTheAgentSVID(t *testing.T) {
	h := newGrantHarness(t)
	a := h.attest()
	e := h.createEntries(ciEntry("ci/builder", a.id.String()))[0]
	_, err := requestGrant(t, h.grantClient(nil), e.GetId(), grantRequest("repo:read"))
	wantCode(t, err, codes.Unauthenticated, "agent SVID required")
	h.setNodeStatus(a.id, typesv1.NodeStatus_NODE_STATUS_BANNED)
	_, err = requestGrant(t, h.grantClient(a.svid), e.GetId(), grantRequest("repo:read"))
	wantCode(t, err, codes.PermissionDenied, msgBanned)
}

func BenchmarkRequestGrant_OverMTLS(b *testing.B) {
	h := newGrantHarness(b)
	a := h.attest()
	e := h.createEntries(ciEntry("ci/bench", a.id.String()))[0]
	client := h.grantClient(a.svid)
	r := grantRequest("repo:read", "repo:write")
	b.ResetTimer()
	for b.Loop() {
		st, err := requestGrant(b, client, e.GetId(), r)
		if err != nil || len(st) != 1 || st[0].GetToken() == "" {
			b.Fatalf("RequestGrant: %v %v", st, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
}
