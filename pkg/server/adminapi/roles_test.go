package adminapi

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

// TestMethodPermission_EveryAdminMethodIsClassified decides every admin
// RPC's permission here, so that a new RPC fails this test until someone
// decides what it needs.
func TestMethodPermission_EveryAdminMethodIsClassified(t *testing.T) {
	want := map[string]Permission{
		"CreateEntry": PermWrite, "BatchCreateEntries": PermWrite, "UpdateEntry": PermWrite, "DeleteEntry": PermWrite,
		"GetEntry": PermRead, "ListEntries": PermRead,
		"ListNodes": PermRead, "GetNode": PermRead, "EvictNode": PermWrite, "BanNode": PermWrite, "UnbanNode": PermWrite,
		"GenerateToken": PermWrite, "ListTokens": PermRead, "RevokeToken": PermWrite,
		"GetBundle":     PermRead,
		"ListApprovals": PermRead, "Approve": PermApprove, "Deny": PermApprove,
		"ListAuditRecords": PermRead, "ListAuditCheckpoints": PermRead, "GetAuditHead": PermRead,
		"ListGrants": PermRead, "GetGrant": PermRead, "RevokeGrant": PermWrite,
		"GetIssuedSVID":   PermRead,
		"ListReputations": PermRead, "GetReputation": PermRead, "ResetReputation": PermWrite,
		"ListFederatedBundles": PermRead, "GetFederatedBundle": PermRead, "SetFederatedBundle": PermWrite,
		"DeleteFederatedBundle": PermWrite, "ListFederationRelationships": PermRead,
	}
	seen := map[string]bool{}
	for _, sd := range []grpc.ServiceDesc{
		adminv1.EntryService_ServiceDesc, adminv1.NodeService_ServiceDesc, adminv1.JoinTokenService_ServiceDesc,
		adminv1.BundleService_ServiceDesc, adminv1.ApprovalService_ServiceDesc, adminv1.AuditService_ServiceDesc,
		adminv1.GrantService_ServiceDesc, adminv1.SVIDService_ServiceDesc, adminv1.ReputationService_ServiceDesc,
		adminv1.FederationService_ServiceDesc,
	} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, name := range names {
			seen[name] = true
			full := "/" + sd.ServiceName + "/" + name
			need, ok := want[name]
			if !ok {
				t.Errorf("%s: not classified here; decide its permission", full)
				continue
			}
			if got := methodPermission(full); got != need {
				t.Errorf("methodPermission(%s) = %s, want %s", full, got, need)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s is classified but no admin service has it", name)
		}
	}
	for full, need := range map[string]Permission{
		"/grpc.health.v1.Health/Check":         PermRead,
		"/nhid.agent.v1.AgentService/Attest":   PermWrite,
		"/nhid.admin.v1.FutureService/Getaway": PermRead,
	} {
		if got := methodPermission(full); got != need {
			t.Errorf("methodPermission(%s) = %s, want %s", full, got, need)
		}
	}
}

func TestRole_PatternsAndPermissions(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	mustPattern := func(s string) IDPattern {
		p, err := ParseIDPattern(s, td)
		if err != nil {
			t.Fatalf("ParseIDPattern(%q): %v", s, err)
		}
		return p
	}
	roles := []Role{
		{Name: "auditors", IDs: []IDPattern{mustPattern("spiffe://example.org/ops/auditor")}, Permissions: []Permission{PermRead}},
		{Name: "approvers", IDs: []IDPattern{mustPattern("spiffe://example.org/approvers/*")}, Permissions: []Permission{PermApprove}},
	}
	tests := []struct {
		id, role string
		read     bool
		approve  bool
		write    bool
	}{
		{"spiffe://example.org/ops/auditor", "auditors", true, false, false},
		{"spiffe://example.org/approvers/alice", "approvers", true, true, false},
		{"spiffe://example.org/approvers/team/bob", "approvers", true, true, false},
		{"spiffe://example.org/approvers", "", false, false, false},
		{"spiffe://example.org/approvers-evil/x", "", false, false, false},
		{"spiffe://example.org/ops/auditor/sub", "", false, false, false},
	}
	for _, tt := range tests {
		r, ok := roleOf(roles, spiffeid.RequireFromString(tt.id))
		if r.Name != tt.role || ok != (tt.role != "") {
			t.Errorf("roleOf(%s) = %q, %v; want %q", tt.id, r.Name, ok, tt.role)
			continue
		}
		if !ok {
			continue
		}
		got := [3]bool{r.permits(PermRead), r.permits(PermApprove), r.permits(PermWrite)}
		if got != [3]bool{tt.read, tt.approve, tt.write} {
			t.Errorf("%s (%s) permits read/approve/write = %v", tt.id, r.Name, got)
		}
	}
	writer := Role{Permissions: []Permission{PermWrite}}
	if !writer.permits(PermRead) || !writer.permits(PermApprove) {
		t.Error("write does not imply approve and read")
	}
	for _, bad := range []string{"not an id", "spiffe://other.org/x", "spiffe://example.org/x/**", "spiffe://example.org/*x"} {
		if _, err := ParseIDPattern(bad, td); err == nil {
			t.Errorf("ParseIDPattern(%q) accepted it", bad)
		}
	}
	if _, err := ParsePermission("admin"); err == nil || !strings.Contains(err.Error(), "read, approve and write") {
		t.Errorf("ParsePermission(admin) = %v", err)
	}
}
