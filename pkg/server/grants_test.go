package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/nhid/nhid/pkg/agentid"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

const allowCI = "version: 1\nrules:\n  - name: ci\n    when: subject.purpose == 'ci'\n    effect: allow\n"

// writePolicy writes a policy file and returns its path.
func writePolicy(t *testing.T, path, src string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServer_GrantFlowFromRequestToIntrospectionAndRevocation(t *testing.T) {
	policyPath := writePolicy(t, filepath.Join(t.TempDir(), "policy.yaml"), allowCI)
	cfg := testConfig(t, filepath.Join(t.TempDir(), "data"), t.TempDir())
	cfg.Policy.Path, cfg.RelyingPartyAddress = policyPath, "127.0.0.1:0"
	srv, _ := start(t, cfg)
	admin := adminConn(t, srv)
	ctx := context.Background()

	tok, err := adminv1.NewJoinTokenServiceClient(admin).GenerateToken(ctx, &adminv1.GenerateTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := bundleOf(t, admin)
	serverID := tlsconfig.AuthorizeID(agentid.Server(td))
	sv := attest(t, agentv1.NewAgentServiceClient(agentConn(t, srv, tlsconfig.TLSClientConfig(bundle, serverID))), tok.GetToken(), newKey(t))
	created, err := adminv1.NewEntryServiceClient(admin).CreateEntry(ctx, &adminv1.CreateEntryRequest{Entry: &typesv1.Entry{
		SpiffeId: "spiffe://example.org/ci/builder", ParentId: sv.ID.String(), Selectors: []string{"unix:uid:1000"},
		Purpose: "ci", Owner: "ana@example.org", ScopeCeiling: []string{"repo:read"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	grants := agentv1.NewAgentGrantServiceClient(agentConn(t, srv, tlsconfig.MTLSClientConfig(sv, bundle, serverID)))
	request := func() *grantv1.GrantStatus {
		t.Helper()
		stream, err := grants.RequestGrant(ctx, &agentv1.AgentGrantRequest{EntryId: created.GetEntry().GetId(),
			Request: &grantv1.GrantRequest{Scopes: []string{"repo:read"}, Reason: "release", Ttl: 60}})
		if err != nil {
			t.Fatal(err)
		}
		st, err := stream.Recv()
		if err != nil {
			t.Fatalf("RequestGrant: %v", err)
		}
		return st
	}
	granted := request()
	if granted.GetState() != grantv1.GrantState_GRANT_STATE_GRANTED {
		t.Fatalf("grant %v, want GRANTED", granted)
	}

	// Any X.509-SVID of the trust domain may introspect; the agent's will do.
	rp := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(sv, bundle, serverID)}}
	t.Cleanup(rp.CloseIdleConnections)
	introspect := func() map[string]any {
		t.Helper()
		resp, err := rp.PostForm("https://"+srv.RelyingPartyAddr().String()+"/introspect", url.Values{"token": {granted.GetToken()}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := introspect(); got["active"] != true || got["txn"] != granted.GetGrantId() || got["sub"] != "spiffe://example.org/ci/builder" {
		t.Fatalf("introspection of a fresh grant = %v", got)
	}
	if _, err := adminv1.NewGrantServiceClient(admin).RevokeGrant(ctx, &adminv1.RevokeGrantRequest{Id: granted.GetGrantId(), Reason: "test"}); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	if got := introspect(); got["active"] != false || len(got) != 1 {
		t.Errorf("introspection after revocation = %v, want {active: false}", got)
	}

	// A new policy takes effect on ReloadPolicy (SIGHUP in the binary).
	writePolicy(t, policyPath, "version: 1\nrules:\n  - name: freeze\n    when: 'true'\n    effect: deny\n    reason: change freeze\n")
	if err := srv.ReloadPolicy(); err != nil {
		t.Fatalf("ReloadPolicy: %v", err)
	}
	if st := request(); st.GetState() != grantv1.GrantState_GRANT_STATE_DENIED || st.GetRule() != "freeze" {
		t.Errorf("after reload: %v, want DENIED by freeze", st)
	}
}

func TestServer_WithoutPolicyRefusesGrants(t *testing.T) {
	cfg := testConfig(t, filepath.Join(t.TempDir(), "data"), t.TempDir())
	srv, _ := start(t, cfg)
	if err := srv.ReloadPolicy(); err == nil || !strings.Contains(err.Error(), "no grant policy") {
		t.Errorf("ReloadPolicy without a policy = %v", err)
	}
	if srv.RelyingPartyAddr() != nil {
		t.Errorf("relying-party endpoints listen at %v without an address", srv.RelyingPartyAddr())
	}
}

func TestServer_BadPolicyFailsTheStart(t *testing.T) {
	path := writePolicy(t, filepath.Join(t.TempDir(), "policy.yaml"), "version: 1\nrules:\n  - name: typo\n    when: request.scope == 1\n    effect: allow\n")
	cfg := testConfig(t, filepath.Join(t.TempDir(), "data"), t.TempDir())
	cfg.Policy.Path = path
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "grant policy") || !strings.Contains(err.Error(), "policy.yaml") {
		t.Errorf("Run with a bad policy = %v, want an error naming the policy file", err)
	}
}
