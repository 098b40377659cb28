package agentapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/clock"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestReattest_RefusedRoundMakesNodeUntrustedAndStopsIssuance(t *testing.T) {
	h, logs := newReattestHarness(t, nil)
	a := h.attestReattesting("node-1")
	h.createEntries(workload("w", a.id.String(), "unix:uid:0"))
	r := openReattest(t, a, goodAnswer("initial"))
	waitNode(t, h, a.id, "verified by a round", func(n *typesv1.Node) bool { return r.answers.Load() > 0 && active(n) })

	r.setAnswer(tamperedAnswer)
	n := waitNode(t, h, a.id, "untrusted", untrusted)
	if want := "continuous attestation failed: measured state changed"; n.GetStatusReason() != want {
		t.Errorf("status_reason = %q, want %q", n.GetStatusReason(), want)
	}
	ctx := context.Background()
	_, err := a.client.Renew(ctx, &agentv1.RenewRequest{Csr: newCSR(t, newKey(t), "")})
	wantCode(t, err, codes.PermissionDenied, "node untrusted: continuous attestation failed: measured state changed")
	_, err = a.client.MintX509SVIDs(ctx, &agentv1.MintX509SVIDsRequest{Params: []*agentv1.X509SVIDParams{{EntryId: "any", Csr: newCSR(t, newKey(t), "")}}})
	wantCode(t, err, codes.PermissionDenied, "node untrusted")
	_, err = a.client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: "any", Audience: []string{"rp"}})
	wantCode(t, err, codes.PermissionDenied, "node untrusted")
	// The node stays connected: it syncs, and it is attested again.
	sync := openSync(t, a.client, 0, 0)
	sync.waitView(t, "spiffe://example.org/w")
	if got := auditLines(logs.String(), "node_untrusted"); len(got) != 1 || !strings.Contains(got[0], "node_id="+a.id.String()) {
		t.Errorf("audit records of node_untrusted = %q, want one naming the node", got)
	}
}

func TestReattest_PassingRoundRestoresTrust(t *testing.T) {
	h, logs := newReattestHarness(t, nil)
	a := h.attestReattesting("node-2")
	r := openReattest(t, a, tamperedAnswer)
	waitNode(t, h, a.id, "untrusted", untrusted)

	r.setAnswer(goodAnswer("initial"))
	n := waitNode(t, h, a.id, "trusted again", active)
	if n.GetStatusReason() != "" {
		t.Errorf("status_reason = %q after recovery, want empty", n.GetStatusReason())
	}
	renew(t, h, a)
	if got := auditLines(logs.String(), "node_trusted"); len(got) != 1 {
		t.Errorf("audit records of node_trusted = %q, want one", got)
	}
}

func TestReattest_PassingRoundReplacesSelectors(t *testing.T) {
	h, _ := newReattestHarness(t, nil)
	a := h.attestReattesting("node-3")
	openReattest(t, a, goodAnswer("updated"))
	n := waitNode(t, h, a.id, "with the new selectors", func(n *typesv1.Node) bool {
		return len(n.GetSelectors()) == 1 && n.GetSelectors()[0] != "test_reattest:state:initial"
	})
	if diff := cmp.Diff([]string{"test_reattest:state:updated"}, n.GetSelectors()); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
}

func TestReattest_OverdueNodeIsRefusedThenMarkedUntrusted(t *testing.T) {
	fake := clock.NewFake(time.Now())
	h, logs := newReattestHarness(t, func(c *Config) { c.Clock = fake })
	a := h.attestReattesting("node-4")
	renew(t, h, a)
	// The node never opens its Reattest stream.
	fake.Add(reattestInterval + overdueGrace(reattestInterval) + time.Second)
	_, err := a.client.Renew(context.Background(), &agentv1.RenewRequest{Csr: newCSR(t, newKey(t), "")})
	wantCode(t, err, codes.PermissionDenied, "node untrusted: continuous attestation overdue")

	h.svc.sweepOverdue(context.Background())
	n := waitNode(t, h, a.id, "untrusted", untrusted)
	if !strings.HasPrefix(n.GetStatusReason(), "continuous attestation overdue: no attestation passed since ") {
		t.Errorf("status_reason = %q, want it to say the node is overdue", n.GetStatusReason())
	}
	if got := auditLines(logs.String(), "node_untrusted"); len(got) != 1 {
		t.Errorf("audit records = %q, want one", got)
	}
}

func TestReattest_OtherAttestorsGetTheStreamEndedAtOnce(t *testing.T) {
	h, _ := newReattestHarness(t, nil)
	a := h.attest() // join token: nothing to attest continuously
	r := openReattest(t, a, goodAnswer("x"))
	if err := r.streamEnd(t); err != nil {
		t.Fatalf("stream ended with %v, want OK", err)
	}
	n := waitNode(t, h, a.id, "active", active)
	if err := h.svc.checkTrusted(n); err != nil {
		t.Errorf("a join-token node is refused: %v", err)
	}
}

func TestReattest_NewerStreamSupersedesOlder(t *testing.T) {
	h, _ := newReattestHarness(t, nil)
	a := h.attestReattesting("node-5")
	older := openReattest(t, a, goodAnswer("initial"))
	waitNode(t, h, a.id, "served on the older stream", func(*typesv1.Node) bool { return older.answers.Load() > 0 })
	newer := openReattest(t, a, goodAnswer("newer"))
	wantCode(t, older.streamEnd(t), codes.Aborted, "superseded")
	waitNode(t, h, a.id, "served on the newer stream", func(*typesv1.Node) bool { return newer.answers.Load() > 0 })
}

func TestReattest_EvictedNodeLosesItsStream(t *testing.T) {
	h, _ := newReattestHarness(t, nil)
	a := h.attestReattesting("node-6")
	r := openReattest(t, a, goodAnswer("initial"))
	waitNode(t, h, a.id, "served", func(*typesv1.Node) bool { return r.answers.Load() > 0 })
	h.setNodeStatus(a.id, typesv1.NodeStatus_NODE_STATUS_EVICTED)
	wantCode(t, r.streamEnd(t), codes.PermissionDenied, msgEvicted)
}

func TestReattest_AnswerToChallengeNeverSentIsRefused(t *testing.T) {
	h, _ := newReattestHarness(t, nil)
	a := h.attestReattesting("node-7")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := a.client.Reattest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&agentv1.ReattestRequest{ChallengeId: 1 << 40, Response: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	wantCode(t, err, codes.InvalidArgument, "was never sent")
}

func TestReattest_UnanswerableRoundIsRetriedWithoutVerdict(t *testing.T) {
	h, _ := newReattestHarness(t, nil)
	a := h.attestReattesting("node-8")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := a.client.Reattest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&agentv1.ReattestRequest{ChallengeId: msg.GetChallengeId(), Error: "TPM busy"}); err != nil {
		t.Fatal(err)
	}
	// No verdict: the node stays trusted, and is asked again.
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("no retry after an unanswerable round: %v", err)
	}
	if n := waitNode(t, h, a.id, "active", active); n.GetStatusReason() != "" {
		t.Errorf("status_reason = %q, want none", n.GetStatusReason())
	}
}
