package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nhid/nhid/pkg/ca"
	"github.com/nhid/nhid/pkg/grant"
	"github.com/nhid/nhid/pkg/policy"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/store/bolt"
	"github.com/nhid/nhid/pkg/telemetry"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

const benchPolicy = `version: 1
rules:
  - name: no-push
    when: request.action == "push"
    effect: deny
    reason: pushes are not allowed
  - name: clone
    when: request.action == "clone"
    effect: allow
`

// benchGrants is the grant service as the server builds it, over a real
// bolt store, CA and policy, with or without the reputation service.
func benchGrants(b *testing.B, withReputation bool) (*grant.Service, grant.Request) {
	b.Helper()
	dir := b.TempDir()
	log := telemetry.DiscardLogger()
	st, err := bolt.Open(filepath.Join(dir, "nhid.db"), bolt.Options{Log: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	authority, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Dir: filepath.Join(dir, "ca"), Bundles: st, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(benchPolicy), 0o600); err != nil {
		b.Fatal(err)
	}
	engine, err := policy.New(policy.Config{Path: path, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	cfg := grant.Config{TrustDomain: td, Store: st, Policy: engine, Signer: authority, Log: log}
	var rep *reputation.Service
	if withReputation {
		if rep, err = reputation.New(reputation.Config{Store: st, Log: log}); err != nil {
			b.Fatal(err)
		}
		cfg.Reputation = rep
	}
	svc, err := grant.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if rep != nil {
		rep.SetRevoker(svc)
	}
	req := grant.Request{
		Entry: &typesv1.Entry{Id: "entry-1", SpiffeId: "spiffe://example.org/ci/builder", ParentId: "spiffe://example.org/nhid/agent/join_token/abc",
			Selectors: []string{"unix:uid:1000"}, Purpose: "ci", Owner: "ana@example.org", ScopeCeiling: []string{"repo:read"}},
		Node:  &typesv1.Node{SpiffeId: "spiffe://example.org/nhid/agent/join_token/abc", Status: typesv1.NodeStatus_NODE_STATUS_ACTIVE},
		Grant: &grantv1.GrantRequest{Scopes: []string{"repo:read"}, Resource: "repo/nhid", Reason: "build", Ttl: 600},
	}
	return svc, req
}

// BenchmarkGrantDecision measures what reputation adds to a grant
// decision: an allowed request reads the standing; a denied one also
// records the denial; an allowed and released one records the release.
func BenchmarkGrantDecision(b *testing.B) {
	for _, rep := range []struct {
		name string
		on   bool
	}{{"reputation=off", false}, {"reputation=on", true}} {
		for _, path := range []string{"allow", "deny", "allow+release"} {
			b.Run(path+"/"+rep.name, func(b *testing.B) {
				svc, req := benchGrants(b, rep.on)
				req.Grant.Action = "clone"
				if path == "deny" {
					req.Grant.Action = "push"
				}
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					res, err := svc.Request(ctx, req)
					if err != nil {
						b.Fatal(err)
					}
					if path == "allow+release" {
						if _, err := svc.Release(ctx, []string{req.Entry.Id}, res.Grant.GetId(), req.Entry.SpiffeId); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}
