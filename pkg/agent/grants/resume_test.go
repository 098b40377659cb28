package grants

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// waitScript answers WaitGrant with msgs, then ends the stream.
func waitScript(msgs ...*grantv1.GrantStatus) func(*agentv1.AgentWaitGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
	return func(_ *agentv1.AgentWaitGrantRequest, s grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		for _, m := range msgs {
			if err := s.Send(m); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestRequest_BrokenWaitForApprovalIsResumedUntilTheDecision(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// The server ends the stream after PENDING (as when it shuts down),
	// then answers one resumed wait with Unavailable, another by ending
	// it early, and the last with the decision.
	h.up.onRequest(func(_ *agentv1.AgentGrantRequest, s grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		if err := s.Send(pending("g1")); err != nil {
			return err
		}
		return status.Error(codes.Unavailable, "nhid-server is shutting down")
	})
	var waits atomic.Int32
	h.up.onWait(func(req *agentv1.AgentWaitGrantRequest, s grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		switch waits.Add(1) {
		case 1:
			return status.Error(codes.Unavailable, "no store")
		case 2:
			return waitScript(pending("g1"))(req, s)
		}
		return waitScript(pending("g1"), granted("g1"))(req, s)
	})
	stream, err := h.client.Request(workloadCtx(t), validRequest())
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
	want := &agentv1.AgentWaitGrantRequest{EntryIds: []string{"e1"}, GrantId: "g1"}
	for _, w := range h.up.gotWaits() {
		if diff := cmp.Diff(want, w, protocmp.Transform()); diff != "" {
			t.Fatalf("WaitGrant request (-want +got):\n%s", diff)
		}
	}
	if n := testutil.ToFloat64(h.handler.metrics.resumes); n != 3 {
		t.Errorf("resumes = %v, want 3", n)
	}
	if n := testutil.ToFloat64(h.handler.metrics.pending); n != 0 {
		t.Errorf("pending gauge = %v after the decision, want 0", n)
	}
}

func TestRequest_WaitResumesOnARestartedServer(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	sentPending := make(chan struct{})
	h.up.onRequest(func(_ *agentv1.AgentGrantRequest, s grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		if err := s.Send(pending("g1")); err != nil {
			return err
		}
		close(sentPending)
		<-s.Context().Done()
		return s.Context().Err()
	})
	h.up.onWait(waitScript(pending("g1"), granted("g1")))
	stream, err := h.client.Request(workloadCtx(t), validRequest())
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := stream.Recv(); err != nil || msg.GetState() != grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL {
		t.Fatalf("first message %v, %v; want PENDING_APPROVAL", msg, err)
	}
	waitFor(t, sentPending)
	h.stopUp() // the server goes away under the wait...
	h.serveUpstream(t)
	msg, err := stream.Recv() // ... and comes back
	if err != nil || msg.GetState() != grantv1.GrantState_GRANT_STATE_GRANTED {
		t.Fatalf("after the restart: %v, %v; want GRANTED", msg, err)
	}
}

func TestRequest_ResumedWaitStopsOnAnAnswerAboutTheGrant(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.onRequest(script(pending("g1")))
	h.up.onWait(func(*agentv1.AgentWaitGrantRequest, grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		return status.Error(codes.NotFound, "grant not found")
	})
	st := status.Convert(requestErr(workloadCtx(t), h.client, validRequest()))
	if st.Code() != codes.NotFound || !strings.Contains(st.Message(), "grant not found") {
		t.Fatalf("got %s %q, want NotFound", st.Code(), st.Message())
	}
	if n := len(h.up.gotWaits()); n != 1 {
		t.Errorf("%d WaitGrant calls, want 1: NotFound is final", n)
	}
}

func TestRequest_CallerLeavingEndsTheResumedWait(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.up.onRequest(script(pending("g1")))
	resumed := make(chan struct{}, 8)
	h.up.onWait(func(_ *agentv1.AgentWaitGrantRequest, s grpc.ServerStreamingServer[grantv1.GrantStatus]) error {
		resumed <- struct{}{}
		return status.Error(codes.Unavailable, "still down")
	})
	ctx, cancel := context.WithCancel(workloadCtx(t))
	stream, err := h.client.Request(ctx, validRequest())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, resumed)
	cancel()
	if _, err := collect(stream); status.Code(err) != codes.Canceled {
		t.Fatalf("stream ended with %v, want Canceled", err)
	}
	// The handler ends the call (and with it the retries) with Canceled.
	deadline := time.Now().Add(waitTimeout)
	for testutil.ToFloat64(h.handler.metrics.requests.WithLabelValues(methodRequest, codes.Canceled.String())) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the handler did not end the call after the caller left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
