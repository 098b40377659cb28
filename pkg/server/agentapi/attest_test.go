package agentapi

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/jointoken"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestAttest_JoinTokenIssuesAgentSVIDOnlyOnce(t *testing.T) {
	h := newHarness(t)
	token := h.newToken("")
	key := newKey(t)
	params := &agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte(token), Csr: newCSR(t, key, "")}
	before := time.Now().Unix()

	res, err := h.attestParams(params, nil)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	sv := svidFrom(t, res.GetSvidChain(), key)
	if _, _, err := x509svid.Verify(sv.Certificates, h.bundle); err != nil {
		t.Errorf("agent SVID does not verify against the bundle: %v", err)
	}
	wantID, _ := agentid.New(td, jointoken.Type, token[:24])
	if sv.ID != wantID || res.GetSpiffeId() != wantID.String() {
		t.Errorf("agent ID = %s (result %s), want %s", sv.ID, res.GetSpiffeId(), wantID)
	}
	if len(res.GetBundle().GetX509Authorities()) == 0 {
		t.Error("result carries no bundle")
	}
	node, err := h.store.GetNode(context.Background(), wantID.String())
	if err != nil {
		t.Fatal(err)
	}
	want := &typesv1.Node{
		SpiffeId: wantID.String(), AttestorType: jointoken.Type, Status: typesv1.NodeStatus_NODE_STATUS_ACTIVE,
		SvidSerial: serialHex(sv.Certificates[0]), SvidExpiresAt: sv.Certificates[0].NotAfter.Unix(),
	}
	if diff := cmp.Diff(want, node, protocmp.Transform(),
		protocmp.IgnoreFields(&typesv1.Node{}, "attested_at", "last_seen_at", "revision", "verified_at")); diff != "" {
		t.Errorf("node record mismatch (-want +got):\n%s", diff)
	}
	if node.GetAttestedAt() < before || node.GetVerifiedAt() != node.GetAttestedAt() {
		t.Errorf("attested_at = %d, verified_at = %d; want both the attestation's time, >= %d",
			node.GetAttestedAt(), node.GetVerifiedAt(), before)
	}
	row, err := h.store.GetIssued(context.Background(), serialHex(sv.Certificates[0]))
	if err != nil {
		t.Fatalf("ledger row of the agent SVID: %v", err)
	}
	if row.GetKind() != typesv1.SVIDKind_SVID_KIND_AGENT_X509 || row.GetNode() != wantID.String() {
		t.Errorf("ledger row = %v", row)
	}

	params.Csr = newCSR(t, newKey(t), "")
	_, err = h.attestParams(params, nil)
	wantCode(t, err, codes.PermissionDenied, "attestation failed: join token already used")
}

func TestAttest_RefusesMalformedRequests(t *testing.T) {
	h := newHarness(t)
	goodCSR := newCSR(t, newKey(t), "")
	tests := []struct {
		name    string
		first   *agentv1.AttestRequest
		code    codes.Code
		message string
	}{
		{
			name:    "first message is a challenge response",
			first:   &agentv1.AttestRequest{Step: &agentv1.AttestRequest_ChallengeResponse{ChallengeResponse: []byte("x")}},
			code:    codes.InvalidArgument,
			message: "the first message must carry params",
		},
		{
			name:    "unknown attestor lists the known ones",
			first:   paramsMsg(&agentv1.AttestParams{Attestor: "tpm", Csr: goodCSR}),
			code:    codes.InvalidArgument,
			message: `params.attestor: unknown attestor "tpm"; known: join_token, test_challenge`,
		},
		{
			name:    "bad CSR",
			first:   paramsMsg(&agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte("x"), Csr: []byte("junk")}),
			code:    codes.InvalidArgument,
			message: "params.csr: csr: not a DER PKCS#10 request",
		},
		{
			name:    "oversized message",
			first:   paramsMsg(&agentv1.AttestParams{Attestor: jointoken.Type, Payload: make([]byte, 70<<10), Csr: goodCSR}),
			code:    codes.InvalidArgument,
			message: "exceeds 65536",
		},
		{
			name:    "refused evidence",
			first:   paramsMsg(&agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte("nope"), Csr: goodCSR}),
			code:    codes.PermissionDenied,
			message: "attestation failed: join token malformed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			stream, err := h.anonymous().Attest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(tt.first); err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			wantCode(t, err, tt.code, tt.message)
		})
	}
}

func paramsMsg(p *agentv1.AttestParams) *agentv1.AttestRequest {
	return &agentv1.AttestRequest{Step: &agentv1.AttestRequest_Params{Params: p}}
}

func TestAttest_BadCSRDoesNotBurnTheToken(t *testing.T) {
	h := newHarness(t)
	token := h.newToken("")
	_, err := h.attestParams(&agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte(token), Csr: []byte{0x30}}, nil)
	wantCode(t, err, codes.InvalidArgument, "params.csr")
	res, err := h.attestParams(&agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte(token), Csr: newCSR(t, newKey(t), "")}, nil)
	if err != nil {
		t.Fatalf("Attest after a bad CSR: %v", err)
	}
	if res.GetSpiffeId() == "" {
		t.Error("no agent ID in the result")
	}
}

func TestAttest_ChallengeRounds(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name    string
		rounds  int
		respond func([]byte) []byte
		code    codes.Code
		message string
	}{
		{name: "three rounds answered", rounds: 3, respond: answerChallenge, code: codes.OK},
		{name: "ten rounds is the limit", rounds: 10, respond: answerChallenge, code: codes.OK},
		{name: "eleven rounds are refused", rounds: 11, respond: answerChallenge,
			code: codes.PermissionDenied, message: "attestation failed: more than 10 challenge rounds"},
		{name: "wrong answer is refused", rounds: 2, respond: func([]byte) []byte { return []byte("no") },
			code: codes.PermissionDenied, message: "attestation failed: wrong challenge response"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := &agentv1.AttestParams{
				Attestor: challengeType, Payload: challengePayload(string(rune('a'+i)), tt.rounds),
				Csr: newCSR(t, newKey(t), ""),
			}
			_, err := h.attestParams(params, tt.respond)
			if tt.code == codes.OK {
				if err != nil {
					t.Fatalf("Attest: %v", err)
				}
				return
			}
			wantCode(t, err, tt.code, tt.message)
		})
	}
}

func TestAttest_TimesOutASilentAgent(t *testing.T) {
	h := newHarness(t)
	h.svc.attestTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := h.anonymous().Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	params := &agentv1.AttestParams{Attestor: challengeType, Payload: challengePayload("slow", 1), Csr: newCSR(t, newKey(t), "")}
	if err := stream.Send(paramsMsg(params)); err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || resp.GetChallenge() == nil {
		t.Fatalf("first response = %v, %v; want a challenge", resp, err)
	}
	// Never answer: the server must give up on its own.
	_, err = stream.Recv()
	wantCode(t, err, codes.DeadlineExceeded, "attestation did not finish")
}

func TestAttest_BannedNodeCannotAttestAgain(t *testing.T) {
	h := newHarness(t)
	id, _ := agentid.New(td, jointoken.Type, "fixed-node")
	first := h.attestWith(jointoken.Type, []byte(h.newToken(id.String())), nil)
	h.setNodeStatus(first.id, typesv1.NodeStatus_NODE_STATUS_BANNED)

	_, err := h.attestParams(&agentv1.AttestParams{
		Attestor: jointoken.Type, Payload: []byte(h.newToken(id.String())), Csr: newCSR(t, newKey(t), ""),
	}, nil)
	wantCode(t, err, codes.PermissionDenied, msgBanned)
}

func TestAttest_EvictedNodeMayAttestAgain(t *testing.T) {
	h := newHarness(t)
	first := h.attestWithSelectors("node-1", "test:rack:1")
	h.setNodeStatus(first.id, typesv1.NodeStatus_NODE_STATUS_EVICTED)
	second := h.attestWithSelectors("node-1", "test:rack:2")
	if second.id != first.id {
		t.Fatalf("re-attested ID %s, want %s", second.id, first.id)
	}
	node, err := h.store.GetNode(context.Background(), first.id.String())
	if err != nil {
		t.Fatal(err)
	}
	got := []any{node.GetStatus(), node.GetSelectors(), node.GetSvidSerial(), node.GetPreviousSvidSerial()}
	want := []any{typesv1.NodeStatus_NODE_STATUS_ACTIVE, []string{"test:rack:2"}, serialHex(second.svid.Certificates[0]), ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("node after re-attestation (-want +got):\n%s", diff)
	}
}

func TestAttest_RefusesBeyondTheConcurrencyLimit(t *testing.T) {
	h := newHarness(t)
	for range cap(h.svc.attestSlots) {
		h.svc.attestSlots <- struct{}{} // attestations "in progress"
	}
	_, err := h.attestParams(&agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte(h.newToken("")), Csr: newCSR(t, newKey(t), "")}, nil)
	wantCode(t, err, codes.ResourceExhausted, "too many attestations in progress")
	<-h.svc.attestSlots
	if _, err := h.attestParams(&agentv1.AttestParams{Attestor: jointoken.Type, Payload: []byte(h.newToken("")), Csr: newCSR(t, newKey(t), "")}, nil); err != nil {
		t.Fatalf("Attest with a free slot: %v", err)
	}
}

func TestAttest_ReplayableEvidenceAdmitsANodeOnceUntilEvicted(t *testing.T) {
	h := newHarness(t)
	payload, _ := json.Marshal(challengeSpec{NodeID: "i-0abc", Rounds: 1, TOFU: true})
	attest := func() error {
		_, err := h.attestParams(&agentv1.AttestParams{Attestor: challengeType, Payload: payload, Csr: newCSR(t, newKey(t), "")}, answerChallenge)
		return err
	}
	if err := attest(); err != nil {
		t.Fatalf("first attestation: %v", err)
	}
	id, _ := agentid.New(td, challengeType, "i-0abc")
	before, err := h.store.GetNode(context.Background(), id.String())
	if err != nil {
		t.Fatal(err)
	}
	// A copy of the evidence cannot attest a second agent, nor take over
	// an UNTRUSTED one.
	wantCode(t, attest(), codes.PermissionDenied, msgAttestedOnce)
	h.setNodeStatus(id, typesv1.NodeStatus_NODE_STATUS_UNTRUSTED)
	wantCode(t, attest(), codes.PermissionDenied, msgAttestedOnce)
	after, err := h.store.GetNode(context.Background(), id.String())
	if err != nil || after.GetSvidSerial() != before.GetSvidSerial() {
		t.Fatalf("a refused replay changed the node: %v, %v", after, err)
	}
	// An operator's eviction lets the genuine node attest again.
	h.setNodeStatus(id, typesv1.NodeStatus_NODE_STATUS_EVICTED)
	if err := attest(); err != nil {
		t.Fatalf("attestation after eviction: %v", err)
	}
	wantCode(t, attest(), codes.PermissionDenied, msgAttestedOnce)
}
