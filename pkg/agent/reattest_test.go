package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

// hostAttestor is a node attestor whose evidence can be presented again,
// with one challenge round, as a TPM's would be: the node proves a stable
// host name by echoing the server's nonce with it.
const hostAttestor = "test_host"

type hostVerifier struct{}

func (hostVerifier) Type() string { return hostAttestor }

func (hostVerifier) Attest(ctx context.Context, payload []byte, challenge attestor.Challenger) (attestor.NodeResult, error) {
	resp, err := challenge(ctx, []byte("nonce"))
	if err != nil {
		return attestor.NodeResult{}, err
	}
	if !bytes.Equal(resp, append([]byte("nonce:"), payload...)) {
		return attestor.NodeResult{}, fmt.Errorf("%w: wrong challenge response", attestor.ErrAttestationFailed)
	}
	id, err := agentid.New(td, hostAttestor, string(payload))
	if err != nil {
		return attestor.NodeResult{}, err
	}
	return attestor.NodeResult{AgentID: id, CanReattest: true}, nil
}

type hostEvidence struct{ host string }

func (hostEvidence) Type() string                               { return hostAttestor }
func (e hostEvidence) Evidence(context.Context) ([]byte, error) { return []byte(e.host), nil }
func (e hostEvidence) Respond(_ context.Context, c []byte) ([]byte, error) {
	return append(append(c, ':'), e.host...), nil
}

func TestAgent_EvictedNodeWithReusableEvidenceAttestsAgainAndKeepsServing(t *testing.T) {
	srv := startServer(t, t.TempDir(), hostVerifier{})
	agentID := "spiffe://example.org/nhid/agent/test_host/node-1"
	srv.createEntry(t, agentID, "workload/host")
	dataDir := t.TempDir()
	cfg := agentConfig(t, srv, dataDir, "")
	cfg.NodeEvidence = hostEvidence{host: "node-1"}
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)
	ch := watch(t, a.Agent)
	waitContext(t, ch, "spiffe://example.org/workload/host")
	before := storedSerial(t, dataDir)

	if _, err := adminv1.NewNodeServiceClient(srv.admin).EvictNode(context.Background(),
		&adminv1.EvictNodeRequest{SpiffeId: agentID}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new agent SVID after re-attestation", func() bool {
		s, err := fileSerial(dataDir)
		return err == nil && s != before
	})
	second := srv.createEntry(t, agentID, "workload/after-eviction")
	waitContext(t, ch, "spiffe://example.org/workload/host", second.GetSpiffeId())
	select {
	case err := <-a.done:
		t.Fatalf("agent stopped after an eviction it could recover from: %v", err)
	default:
	}
}
