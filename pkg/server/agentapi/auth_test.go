package agentapi

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/ca"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// callAll runs every authenticated RPC and returns their errors by name.
func callAll(t *testing.T, client agentv1.AgentServiceClient) map[string]error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	errs := map[string]error{}
	_, errs["Renew"] = client.Renew(ctx, &agentv1.RenewRequest{Csr: newCSR(t, newKey(t), "")})
	_, errs["MintX509SVIDs"] = client.MintX509SVIDs(ctx, &agentv1.MintX509SVIDsRequest{
		Params: []*agentv1.X509SVIDParams{{EntryId: "x", Csr: newCSR(t, newKey(t), "")}},
	})
	_, errs["MintJWTSVID"] = client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: "x", Audience: []string{"a"}})
	stream, err := client.Sync(ctx, &agentv1.SyncRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	errs["Sync"] = err
	return errs
}

func TestAuth_RefusesNodesThatMayNotBeServed(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name    string
		prepare func(a *agent) agentv1.AgentServiceClient
		code    codes.Code
		message string
	}{
		{
			name:    "no client certificate",
			prepare: func(*agent) agentv1.AgentServiceClient { return h.anonymous() },
			code:    codes.Unauthenticated,
			message: "agent SVID required",
		},
		{
			name: "evicted node",
			prepare: func(a *agent) agentv1.AgentServiceClient {
				h.setNodeStatus(a.id, typesv1.NodeStatus_NODE_STATUS_EVICTED)
				return a.client
			},
			code:    codes.PermissionDenied,
			message: msgEvicted,
		},
		{
			name: "banned node",
			prepare: func(a *agent) agentv1.AgentServiceClient {
				h.setNodeStatus(a.id, typesv1.NodeStatus_NODE_STATUS_BANNED)
				return a.client
			},
			code:    codes.PermissionDenied,
			message: msgBanned,
		},
		{
			name: "deleted node",
			prepare: func(a *agent) agentv1.AgentServiceClient {
				if err := h.store.DeleteNode(context.Background(), a.id.String()); err != nil {
					t.Fatal(err)
				}
				return a.client
			},
			code:    codes.PermissionDenied,
			message: msgUnknown,
		},
		{
			name: "SVID of a workload, not an agent",
			prepare: func(a *agent) agentv1.AgentServiceClient {
				key := newKey(t)
				chain, err := h.ca.SignX509SVID(context.Background(), ca.X509Params{
					ID: mustID("spiffe://example.org/workload"), PublicKey: key.Public(), TTL: time.Hour,
				})
				if err != nil {
					t.Fatal(err)
				}
				return h.clientFor(&x509svid.SVID{ID: mustID("spiffe://example.org/workload"), Certificates: chain, PrivateKey: key})
			},
			code:    codes.PermissionDenied,
			message: "is not an agent ID of trust domain example.org",
		},
		{
			name: "SVID superseded by two renewals",
			prepare: func(a *agent) agentv1.AgentServiceClient {
				original := a.svid
				for range 2 {
					renew(t, h, a)
				}
				return h.clientFor(original)
			},
			code:    codes.PermissionDenied,
			message: msgSuperseded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := h.attest()
			client := tt.prepare(a)
			for method, err := range callAll(t, client) {
				t.Run(method, func(t *testing.T) { wantCode(t, err, tt.code, tt.message) })
			}
		})
	}
}

// renew renews a's SVID and switches a to it, returning the old one.
func renew(t *testing.T, h *harness, a *agent) *x509svid.SVID {
	t.Helper()
	key := newKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := a.client.Renew(ctx, &agentv1.RenewRequest{Csr: newCSR(t, key, "")})
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	old := a.svid
	a.svid = svidFrom(t, resp.GetSvidChain(), key)
	a.client = h.clientFor(a.svid)
	return old
}

func TestAuth_ForeignCertificateFailsTheHandshake(t *testing.T) {
	h := newHarness(t)
	other := newHarness(t)
	stranger := other.attest()
	client := h.clientFor(stranger.svid)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := client.Renew(ctx, &agentv1.RenewRequest{Csr: newCSR(t, newKey(t), "")})
	wantCode(t, err, codes.Unavailable, "")
}

func TestRenew_PreviousSVIDWorksUntilTheNewOneIsUsed(t *testing.T) {
	h := newHarness(t)
	a := h.attest()
	old := renew(t, h, a)
	ctx := context.Background()

	node, err := h.store.GetNode(ctx, a.id.String())
	if err != nil {
		t.Fatal(err)
	}
	if node.GetSvidSerial() != serialHex(a.svid.Certificates[0]) || node.GetPreviousSvidSerial() != serialHex(old.Certificates[0]) {
		t.Fatalf("node serials = %s/%s, want %s/%s", node.GetSvidSerial(), node.GetPreviousSvidSerial(),
			serialHex(a.svid.Certificates[0]), serialHex(old.Certificates[0]))
	}
	if row, err := h.store.GetIssued(ctx, serialHex(a.svid.Certificates[0])); err != nil || row.GetKind() != typesv1.SVIDKind_SVID_KIND_AGENT_X509 {
		t.Errorf("ledger row of renewed SVID = %v, %v", row, err)
	}
	oldClient := h.clientFor(old)
	if _, err := oldClient.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: "none", Audience: []string{"a"}}); !isCode(err, codes.NotFound) {
		t.Fatalf("call with the previous SVID before the new one is used = %v, want NotFound for the entry", err)
	}
	if _, err := a.client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: "none", Audience: []string{"a"}}); !isCode(err, codes.NotFound) {
		t.Fatalf("call with the new SVID = %v, want NotFound for the entry", err)
	}
	_, err = oldClient.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{EntryId: "none", Audience: []string{"a"}})
	wantCode(t, err, codes.PermissionDenied, msgSuperseded)
}

func TestRenew_RejectsABadCSR(t *testing.T) {
	h := newHarness(t)
	a := h.attest()
	csr := newCSR(t, newKey(t), "")
	csr[len(csr)-1] ^= 0xff
	_, err := a.client.Renew(context.Background(), &agentv1.RenewRequest{Csr: csr})
	wantCode(t, err, codes.InvalidArgument, "csr: ")
}

func isCode(err error, c codes.Code) bool { return status.Code(err) == c }

func mustID(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
