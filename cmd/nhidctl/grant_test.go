package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/store/bolt"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// grantServer is a real admin API with the grant and SVID services over a
// real bolt store, CA, policy engine and grant service.
type grantServer struct {
	*server
	grants *grant.Service
}

func newGrantServer(t *testing.T) *grantServer {
	t.Helper()
	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	log := slog.New(slog.DiscardHandler)
	authority, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Dir: filepath.Join(dir, "ca"), Bundles: st, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	src := "version: 1\nrules:\n  - name: ci\n    when: subject.purpose == 'ci'\n    effect: allow\n"
	if err := os.WriteFile(policyFile, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	engine, err := policy.New(policy.Config{Path: policyFile, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	gs, err := grant.New(grant.Config{TrustDomain: td, Store: st, Policy: engine, Signer: authority, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	s := serveAdmin(t, dir, st, adminapi.Config{Grants: gs, Ledger: st, Log: log})
	return &grantServer{server: s, grants: gs}
}

// issue decides a grant for an entry of the given purpose.
func (s *grantServer) issue(t *testing.T, purpose string) *typesv1.Grant {
	t.Helper()
	e := &typesv1.Entry{Id: "entry-1", SpiffeId: "spiffe://example.org/ci/builder", ParentId: agentA,
		Purpose: purpose, Owner: "ana@example.org", ScopeCeiling: []string{"repo:read", "repo:write"}}
	res, err := s.grants.Request(context.Background(), grant.Request{
		Entry: e, Node: &typesv1.Node{SpiffeId: agentA},
		Grant: &grantv1.GrantRequest{Scopes: []string{"repo:read"}, Resource: "repo/nhid", Reason: "release 1.2", Ttl: 600},
	})
	if err != nil {
		t.Fatal(err)
	}
	return res.Grant
}

func TestGrantList_JSONUsesProtoNamesAndFilters(t *testing.T) {
	s := newGrantServer(t)
	if out := s.mustRun(t, "grant", "list", "-o", "json"); !strings.Contains(out, `"grants": []`) {
		t.Errorf("grant list -o json on an empty store = %s", out)
	}
	if out := s.mustRun(t, "grant", "list"); strings.TrimSpace(out) != "no grants" {
		t.Errorf("grant list on an empty store = %q", out)
	}
	allowed, denied := s.issue(t, "ci"), s.issue(t, "other")
	out := s.mustRun(t, "-o", "json", "grant", "list")
	var raw struct {
		Grants []map[string]any `json:"grants"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("grant list -o json: %v\n%s", err, out)
	}
	if len(raw.Grants) != 2 || raw.Grants[0]["id"] != denied.GetId() || raw.Grants[1]["spiffe_id"] != "spiffe://example.org/ci/builder" {
		t.Fatalf("grant list -o json = %s", out)
	}
	if _, ok := raw.Grants[1]["requested_scopes"]; !ok {
		t.Errorf("JSON lacks the proto name requested_scopes: %s", out)
	}
	active := decode(t, s.mustRun(t, "-o", "json", "grant", "list", "--status", "active"), &adminv1.ListGrantsResponse{})
	if len(active.GetGrants()) != 1 || active.GetGrants()[0].GetId() != allowed.GetId() {
		t.Errorf("grant list --status active = %v", active.GetGrants())
	}
	table := s.mustRun(t, "grant", "list", "--spiffe-id", "spiffe://example.org/ci/builder")
	for _, want := range []string{"ID", "STATUS", allowed.GetId(), "active", "denied", "repo:read"} {
		if !strings.Contains(table, want) {
			t.Errorf("grant list table lacks %q:\n%s", want, table)
		}
	}
	if r := s.run(t, "grant", "list", "--status", "bogus"); r.code != 2 || !strings.Contains(r.stderr, "is not one of") {
		t.Errorf("--status bogus: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestGrantShowAndRevoke(t *testing.T) {
	s := newGrantServer(t)
	g := s.issue(t, "ci")
	shown := s.mustRun(t, "grant", "show", g.GetId())
	for _, want := range []string{"Status:", "active", "Purpose:", "ci", "Reason:", "release 1.2", "Rule:"} {
		if !strings.Contains(shown, want) {
			t.Errorf("grant show lacks %q:\n%s", want, shown)
		}
	}
	if r := s.run(t, "grant", "revoke", g.GetId()); r.code != 2 || !strings.Contains(r.stderr, "--reason is required") {
		t.Errorf("revoke without --reason: exit %d, stderr %q", r.code, r.stderr)
	}
	out := s.mustRun(t, "-o", "json", "grant", "revoke", g.GetId(), "--reason", "token leaked")
	resp := decode(t, out, &adminv1.RevokeGrantResponse{})
	if resp.GetGrant().GetStatus() != typesv1.GrantStatus_GRANT_STATUS_REVOKED || resp.GetGrant().GetDecisionReason() != "token leaked" {
		t.Errorf("revoke -o json = %s", out)
	}
	if r := s.run(t, "grant", "revoke", g.GetId(), "--reason", "again"); r.code != 1 || !strings.Contains(r.stderr, "is revoked") {
		t.Errorf("second revoke: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := s.run(t, "grant", "show", "no-such-grant"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("show of an unknown grant: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestSVIDShow_AsksTheLedger(t *testing.T) {
	s := newGrantServer(t)
	row := &typesv1.IssuedSVID{
		Id: "1a2b3c", Kind: typesv1.SVIDKind_SVID_KIND_X509, SpiffeId: "spiffe://example.org/ci/builder",
		EntryId: "entry-1", Node: agentA, Purpose: "builds releases", Owner: "ana@example.org",
		IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(time.Hour).Unix(),
	}
	if err := s.store.RecordIssued(context.Background(), []*typesv1.IssuedSVID{row}); err != nil {
		t.Fatal(err)
	}
	table := s.mustRun(t, "svid", "show", "1A:2B:3C")
	for _, want := range []string{"Kind:", "x509", "Purpose:", "builds releases", "Owner:", "ana@example.org", agentA} {
		if !strings.Contains(table, want) {
			t.Errorf("svid show lacks %q:\n%s", want, table)
		}
	}
	got := decode(t, s.mustRun(t, "-o", "json", "svid", "show", "1a2b3c"), &adminv1.GetIssuedSVIDResponse{})
	if got.GetSvid().GetEntryId() != "entry-1" {
		t.Errorf("svid show -o json = %v", got)
	}
	if r := s.run(t, "svid", "show", "ffff"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("svid show of an unknown serial: exit %d, stderr %q", r.code, r.stderr)
	}
}
