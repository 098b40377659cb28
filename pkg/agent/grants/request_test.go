package grants

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/workloadapi"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

func pending(id string) *grantv1.GrantStatus {
	return &grantv1.GrantStatus{GrantId: id, State: grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL, Reason: "deploys need approval", Rule: "approve-deploys"}
}

func granted(id string) *grantv1.GrantStatus {
	return &grantv1.GrantStatus{GrantId: id, State: grantv1.GrantState_GRANT_STATE_GRANTED, Token: "header.payload.signature",
		Scopes: []string{"deploy:staging"}, ExpiresAt: 1893456000, Rule: "approve-deploys"}
}

// script answers RequestGrant with msgs, then ends the stream.
func script(msgs ...*grantv1.GrantStatus) func(*agentv1.AgentGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
	return func(_ *agentv1.AgentGrantRequest, s grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		for _, m := range msgs {
			if err := s.Send(m); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestRequest_RelaysPendingThenGrantedForTheCallersEntry(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.onRequest(script(pending("g1"), granted("g1")))
	req := validRequest()
	req.AuthorizationDetails = `[{"type":"deployment","locations":["staging"]}]`

	stream, err := h.client.Request(workloadCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := collect(stream)
	if !isEOF(err) {
		t.Fatalf("stream ended with %v", err)
	}
	if diff := cmp.Diff([]*grantv1.GrantStatus{pending("g1"), granted("g1")}, got, protocmp.Transform()); diff != "" {
		t.Fatalf("relayed messages (-want +got):\n%s", diff)
	}
	want := []*agentv1.AgentGrantRequest{{EntryId: "e1", Request: req}}
	if diff := cmp.Diff(want, h.up.gotRequests(), protocmp.Transform()); diff != "" {
		t.Fatalf("forwarded requests (-want +got):\n%s", diff)
	}
	if n := testutil.ToFloat64(h.handler.metrics.outcomes.WithLabelValues("granted")); n != 1 {
		t.Errorf("granted outcomes = %v, want 1", n)
	}
	if n := testutil.ToFloat64(h.handler.metrics.pending); n != 0 {
		t.Errorf("pending gauge = %v after the decision, want 0", n)
	}
}

func TestRequest_ChoosesTheIdentityNamedBySPIFFEID(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.identities.set(identity("e1", "spiffe://example.org/a"), identity("e2", "spiffe://example.org/b"))
	h.up.onRequest(script(granted("g1")))
	req := validRequest()
	req.SpiffeId = "spiffe://example.org/b"
	stream, err := h.client.Request(workloadCtx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := collect(stream); !isEOF(err) {
		t.Fatal(err)
	}
	if len(h.up.gotRequests()) != 1 || h.up.gotRequests()[0].GetEntryId() != "e2" {
		t.Fatalf("forwarded %v, want one request for entry e2", h.up.gotRequests())
	}
}

func TestRequest_RefusalsNeverReachTheServer(t *testing.T) {
	several := []workloadapi.Identity{identity("e1", "spiffe://example.org/a"), identity("e2", "spiffe://example.org/b")}
	sameID := []workloadapi.Identity{identity("e1", "spiffe://example.org/a"), identity("e2", "spiffe://example.org/a")}
	with := func(mod func(*grantv1.GrantRequest)) *grantv1.GrantRequest { r := validRequest(); mod(r); return r }
	tests := []struct {
		name       string
		ids        []workloadapi.Identity
		attestErr  error
		noHeader   bool
		req        *grantv1.GrantRequest
		wantCode   codes.Code
		wantSubstr string
	}{
		{name: "no security header", noHeader: true, req: validRequest(), wantCode: codes.InvalidArgument, wantSubstr: "security header"},
		{name: "attestation fails", attestErr: errors.New("/proc/123/exe: secret detail"), req: validRequest(), wantCode: codes.PermissionDenied, wantSubstr: "no identity issued"},
		{name: "no identity", ids: []workloadapi.Identity{}, req: validRequest(), wantCode: codes.PermissionDenied, wantSubstr: "no identity issued"},
		{name: "several identities", ids: several, req: validRequest(), wantCode: codes.InvalidArgument, wantSubstr: "caller holds several identities; set spiffe_id"},
		{name: "someone else's SPIFFE ID", ids: several, req: with(func(r *grantv1.GrantRequest) { r.SpiffeId = "spiffe://example.org/c" }), wantCode: codes.PermissionDenied, wantSubstr: "not one of the caller's identities"},
		{name: "oversized SPIFFE ID", ids: several, req: with(func(r *grantv1.GrantRequest) { r.SpiffeId = "spiffe://example.org/" + strings.Repeat("x", 3000) }), wantCode: codes.InvalidArgument, wantSubstr: "spiffe_id: is 3021 bytes"},
		{name: "two entries for one SPIFFE ID", ids: sameID, req: validRequest(), wantCode: codes.FailedPrecondition, wantSubstr: "a grant needs exactly one"},
		{name: "no scopes", req: with(func(r *grantv1.GrantRequest) { r.Scopes = nil }), wantCode: codes.InvalidArgument, wantSubstr: "scopes"},
		{name: "malformed scope", req: with(func(r *grantv1.GrantRequest) { r.Scopes = []string{"deploy staging"} }), wantCode: codes.InvalidArgument, wantSubstr: "scopes[0]"},
		{name: "zero ttl", req: with(func(r *grantv1.GrantRequest) { r.Ttl = 0 }), wantCode: codes.InvalidArgument, wantSubstr: "ttl"},
		{name: "negative ttl", req: with(func(r *grantv1.GrantRequest) { r.Ttl = -5 }), wantCode: codes.InvalidArgument, wantSubstr: "ttl"},
		{name: "ttl above any server's maximum", req: with(func(r *grantv1.GrantRequest) { r.Ttl = 86401 }), wantCode: codes.InvalidArgument, wantSubstr: "ttl"},
		{name: "oversized reason", req: with(func(r *grantv1.GrantRequest) { r.Reason = strings.Repeat("x", 5000) }), wantCode: codes.InvalidArgument, wantSubstr: "reason"},
		{name: "details not an array", req: with(func(r *grantv1.GrantRequest) { r.AuthorizationDetails = `{"type":"x"}` }), wantCode: codes.InvalidArgument, wantSubstr: "authorization_details"},
		{name: "detail without type", req: with(func(r *grantv1.GrantRequest) { r.AuthorizationDetails = `[{"actions":["read"]}]` }), wantCode: codes.InvalidArgument, wantSubstr: "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var attestor workloadapi.Attestor
			if tt.attestErr != nil {
				attestor = attestorFunc(func(context.Context, int32) (selector.Set, error) { return selector.Set{}, tt.attestErr })
			}
			h := newHarness(t, harnessOptions{attestor: attestor})
			if tt.ids != nil {
				h.identities.set(tt.ids...)
			}
			h.up.onRequest(script(granted("g1")))
			ctx := workloadCtx(t)
			if tt.noHeader {
				ctx = context.Background()
			}
			err := requestErr(ctx, h.client, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantSubstr) {
				t.Fatalf("got %s %q, want %s containing %q", st.Code(), st.Message(), tt.wantCode, tt.wantSubstr)
			}
			if strings.Contains(st.Message(), "secret") {
				t.Fatalf("the refusal leaks attestation internals: %q", st.Message())
			}
			if n := h.up.requestCount(); n != 0 {
				t.Fatalf("the server received %d requests, want none", n)
			}
		})
	}
}

func TestRequest_MapsServerErrorsForTheWorkload(t *testing.T) {
	tests := []struct {
		name     string
		upErr    error
		wantCode codes.Code
		wantMsg  string
	}{
		{"invalid argument passes", status.Error(codes.InvalidArgument, "ttl: 7200 s exceeds the maximum of 3600 s"), codes.InvalidArgument, "ttl: 7200 s exceeds the maximum of 3600 s"},
		{"permission denied passes", status.Error(codes.PermissionDenied, "entry e1: not authorised for this node"), codes.PermissionDenied, "entry e1: not authorised for this node"},
		{"not found passes", status.Error(codes.NotFound, "entry e1: not found"), codes.NotFound, "entry e1: not found"},
		{"unavailable", status.Error(codes.Unavailable, "store down"), codes.Unavailable, "nhid-server cannot be reached; retry later"},
		{"internal hides the cause", status.Error(codes.Internal, "bbolt: page 42 corrupt"), codes.Internal, "nhid-server failed to handle the request"},
		{"unimplemented", status.Error(codes.Unimplemented, "unknown service"), codes.Unimplemented, "nhid-server does not serve grants"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			h.up.onRequest(func(*agentv1.AgentGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
				return tt.upErr
			})
			st := status.Convert(requestErr(workloadCtx(t), h.client, validRequest()))
			if diff := cmp.Diff([]any{tt.wantCode, tt.wantMsg}, []any{st.Code(), st.Message()}); diff != "" {
				t.Fatalf("status (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRequest_ServerUnreachableIsUnavailable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stopUp()
	st := status.Convert(requestErr(workloadCtx(t), h.client, validRequest()))
	if st.Code() != codes.Unavailable {
		t.Fatalf("got %s %q, want Unavailable", st.Code(), st.Message())
	}
}

func TestRequest_StreamEndingWithoutDecisionIsUnavailable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.onRequest(script()) // ended before naming a grant: nothing to resume
	st := status.Convert(requestErr(workloadCtx(t), h.client, validRequest()))
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "without a decision") {
		t.Fatalf("got %s %q, want Unavailable without a decision", st.Code(), st.Message())
	}
}

func TestRequest_CallerLeavingCancelsTheUpstreamRequest(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	upstreamDone := make(chan error, 1)
	h.up.onRequest(func(_ *agentv1.AgentGrantRequest, s grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		if err := s.Send(pending("g1")); err != nil {
			return err
		}
		<-s.Context().Done() // a human who never answers
		upstreamDone <- s.Context().Err()
		return s.Context().Err()
	})
	ctx, cancel := context.WithCancel(workloadCtx(t))
	stream, err := h.client.Request(ctx, validRequest())
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := stream.Recv(); err != nil || msg.GetState() != grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL {
		t.Fatalf("first message %v, %v; want PENDING_APPROVAL", msg, err)
	}
	cancel()
	if err := waitFor(t, upstreamDone); !errors.Is(err, context.Canceled) {
		t.Fatalf("upstream context ended with %v, want Canceled", err)
	}
}

func TestRequest_StopEndsAPendingRequestWithUnavailable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.onRequest(func(_ *agentv1.AgentGrantRequest, s grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		if err := s.Send(pending("g1")); err != nil {
			return err
		}
		<-s.Context().Done()
		return s.Context().Err()
	})
	stream, err := h.client.Request(workloadCtx(t), validRequest())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	h.handler.Stop()
	_, err = collect(stream)
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "shutting down") {
		t.Fatalf("after Stop: %s %q, want Unavailable shutting down", st.Code(), st.Message())
	}
	if err := requestErr(workloadCtx(t), h.client, validRequest()); status.Code(err) != codes.Unavailable {
		t.Fatalf("a request after Stop: %v, want Unavailable", err)
	}
}

// requestErr runs a Request to its end and returns how it ended (nil
// for a clean end).
func requestErr(ctx context.Context, c grantv1.GrantsClient, req *grantv1.GrantRequest) error {
	stream, err := c.Request(ctx, req)
	if err != nil {
		return err
	}
	_, err = collect(stream)
	if isEOF(err) {
		return nil
	}
	return err
}

func waitFor[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("nothing within %s", waitTimeout)
		var zero T
		return zero
	}
}
