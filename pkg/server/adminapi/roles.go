package adminapi

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Permission is a class of admin API methods a role may call.
type Permission string

// Permissions, from least to most powerful.
const (
	// PermRead: every Get* and List* method (entries, nodes, tokens
	// without their secrets, the bundle, grants, approvals, audit,
	// reputation, the SVID ledger) and the health service.
	PermRead Permission = "read"
	// PermApprove: ApprovalService Approve and Deny.
	PermApprove Permission = "approve"
	// PermWrite: every other method (entry, node, token, grant and
	// reputation changes). A method the table does not know needs it too.
	PermWrite Permission = "write"
)

// Permissions lists the permissions, for configuration errors.
func Permissions() []Permission { return []Permission{PermRead, PermApprove, PermWrite} }

// ParsePermission checks s is a permission.
func ParsePermission(s string) (Permission, error) {
	p := Permission(s)
	if !slices.Contains(Permissions(), p) {
		return "", fmt.Errorf("unknown permission %q; permissions are read, approve and write", s)
	}
	return p, nil
}

// approvalMethods prefixes the approval service's full method names.
const approvalMethods = "/nhid.admin.v1.ApprovalService/"

// methodPermission is the permission a full gRPC method name needs.
func methodPermission(fullMethod string) Permission {
	if strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") {
		return PermRead
	}
	if fullMethod == approvalMethods+"Approve" || fullMethod == approvalMethods+"Deny" {
		return PermApprove
	}
	if !strings.HasPrefix(fullMethod, "/nhid.admin.v1.") {
		return PermWrite
	}
	name := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	if strings.HasPrefix(name, "Get") || strings.HasPrefix(name, "List") {
		return PermRead
	}
	return PermWrite
}

// IDPattern matches SPIFFE IDs: one ID exactly, or, ending in "/*",
// every ID under that path (not the path itself).
type IDPattern struct {
	id     spiffeid.ID
	prefix string // "spiffe://td/path/" for a "/*" pattern
}

// ParseIDPattern parses an ID pattern of trust domain td.
func ParseIDPattern(s string, td spiffeid.TrustDomain) (IDPattern, error) {
	base, wild := strings.CutSuffix(s, "/*")
	id, err := spiffeid.FromString(base)
	if err != nil {
		return IDPattern{}, fmt.Errorf("%q is not a SPIFFE ID or a SPIFFE ID followed by /*: %v", s, err)
	}
	if !td.IsZero() && !id.MemberOf(td) {
		return IDPattern{}, fmt.Errorf("%q is not in trust domain %q", s, td.Name())
	}
	if wild {
		return IDPattern{prefix: strings.TrimSuffix(id.String(), "/") + "/"}, nil
	}
	return IDPattern{id: id}, nil
}

// Match reports whether id matches the pattern.
func (p IDPattern) Match(id spiffeid.ID) bool {
	if p.prefix != "" {
		return strings.HasPrefix(id.String(), p.prefix)
	}
	return p.id == id
}

// Role narrows what some admin identities may do over mTLS: an identity
// that matches a role's IDs (the first matching role counts) may call
// only the methods its permissions cover. Roles never let anyone in:
// the caller still needs an admin entry or a place on the allow-list.
type Role struct {
	// Name appears in refusals and logs.
	Name        string
	IDs         []IDPattern
	Permissions []Permission
}

// roleOf returns the first role matching id, if any.
func roleOf(roles []Role, id spiffeid.ID) (Role, bool) {
	for _, r := range roles {
		if slices.ContainsFunc(r.IDs, func(p IDPattern) bool { return p.Match(id) }) {
			return r, true
		}
	}
	return Role{}, false
}

// permits reports whether the role covers need; write implies approve
// and read, approve implies read.
func (r Role) permits(need Permission) bool {
	for _, have := range r.Permissions {
		if have == need || have == PermWrite || (have == PermApprove && need == PermRead) {
			return true
		}
	}
	return false
}
