package agentsvid

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agent/internal/agenttest"
	"github.com/nhid/nhid/pkg/clock"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

var (
	td      = spiffeid.RequireTrustDomainFromString("example.org")
	agentID = spiffeid.RequireFromString("spiffe://example.org/nhid/agent/test_challenge/node-1")
)

func fakeServer(t *testing.T, na agenttest.NodeAttestation) agentv1.AgentServiceClient {
	t.Helper()
	srv, conn := agenttest.Start(t, agenttest.NewCA(t, td, clock.Real()))
	srv.SetNodeAttestation(na)
	return agentv1.NewAgentServiceClient(conn)
}

func TestAttest_AnswersChallengesAndReturnsACheckedSVID(t *testing.T) {
	for _, rounds := range []int{0, 1, maxChallenges} {
		t.Run(fmt.Sprintf("challenges=%d", rounds), func(t *testing.T) {
			client := fakeServer(t, agenttest.NodeAttestation{Payload: []byte("proof"), Challenges: rounds, AgentID: agentID})
			res, err := Attest(context.Background(), client, td, agenttest.Evidence{Payload: []byte("proof")})
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if res.SVID.ID != agentID || res.Bundle == nil || res.BundleProto == nil {
				t.Errorf("result = %s, bundle %v; want %s with a bundle", res.SVID.ID, res.Bundle != nil, agentID)
			}
			if len(res.Selectors) != 1 || res.Selectors[0] != "test:node" {
				t.Errorf("selectors = %v, want [test:node]", res.Selectors)
			}
		})
	}
}

func TestAttest_Failures(t *testing.T) {
	tests := []struct {
		name     string
		na       agenttest.NodeAttestation
		wantCode codes.Code
		wantErr  string
	}{
		{"refused evidence keeps the server's status",
			agenttest.NodeAttestation{Payload: []byte("other"), AgentID: agentID}, codes.PermissionDenied, "wrong evidence"},
		{"more challenges than the agent answers",
			agenttest.NodeAttestation{Payload: []byte("proof"), Challenges: maxChallenges + 1, AgentID: agentID}, codes.Unknown, "more than 10 challenges"},
		{"an SVID outside the agent namespace",
			agenttest.NodeAttestation{Payload: []byte("proof"), AgentID: spiffeid.RequireFromString("spiffe://example.org/workload")},
			codes.Unknown, "is not an agent ID"},
		{"an SVID of another trust domain",
			agenttest.NodeAttestation{Payload: []byte("proof"), AgentID: spiffeid.RequireFromString("spiffe://other.org/nhid/agent/x/y")},
			codes.Unknown, "is not an agent ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fakeServer(t, tt.na)
			_, err := Attest(context.Background(), client, td, agenttest.Evidence{Payload: []byte("proof")})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Attest error = %v, want one containing %q", err, tt.wantErr)
			}
			if tt.wantCode != codes.Unknown && status.Code(err) != tt.wantCode {
				t.Errorf("code = %v, want %v", status.Code(err), tt.wantCode)
			}
		})
	}
}

func TestRenew_ChecksTheIDStaysTheSame(t *testing.T) {
	client := fakeServer(t, agenttest.NodeAttestation{AgentID: agentID})
	res, err := Renew(context.Background(), client, td, agentID)
	if err != nil || res.SVID.ID != agentID {
		t.Fatalf("Renew = %v, %v; want an SVID for %s", res, err, agentID)
	}
	other := spiffeid.RequireFromString("spiffe://example.org/nhid/agent/test_challenge/node-2")
	if _, err := Renew(context.Background(), client, td, other); err == nil || !strings.Contains(err.Error(), "want "+other.String()) {
		t.Errorf("Renew for another ID = %v, want an ID mismatch error", err)
	}
}

func TestFiles_SaveLoadRemove(t *testing.T) {
	dir := t.TempDir()
	if s, err := Load(dir); s != nil || err != nil {
		t.Fatalf("Load of an empty dir = %v, %v; want nil, nil", s, err)
	}
	client := fakeServer(t, agenttest.NodeAttestation{AgentID: agentID})
	res, err := Renew(context.Background(), client, td, agentID)
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(dir, res.SVID); err != nil {
		t.Fatalf("Save: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat = %v, %v; want mode 0600", fi, err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.ID != agentID || !got.Certificates[0].Equal(res.SVID.Certificates[0]) {
		t.Errorf("loaded SVID differs from the saved one")
	}
	if err := Remove(dir); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := Remove(dir); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestLoad_RejectsDamagedFiles(t *testing.T) {
	tests := []struct{ name, content, wantErr string }{
		{"no key", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "needs a PRIVATE KEY"},
		{"foreign block", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "unexpected PEM block"},
		{"not PEM", "garbage", "needs a PRIVATE KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Load = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
