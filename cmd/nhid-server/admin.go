package main

import (
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/config"
	"github.com/nhid/nhid/pkg/server/adminapi"
)

// maxAdminRoles bounds server.admin.roles: each call walks them.
const maxAdminRoles = 100

// spiffeIDs parses a list of SPIFFE IDs of trust domain td.
func spiffeIDs(errs *config.Errors, path string, td spiffeid.TrustDomain, ss []string) []spiffeid.ID {
	var out []spiffeid.ID
	for i, s := range ss {
		p := fmt.Sprintf("%s[%d]", path, i)
		id, err := spiffeid.FromString(s)
		switch {
		case err != nil:
			errs.Addf(p, "%q is not a SPIFFE ID: %v", s, err)
		case !td.IsZero() && !id.MemberOf(td):
			errs.Addf(p, "%q is not in trust domain %q", s, td.Name())
		default:
			out = append(out, id)
		}
	}
	return out
}

// adminRoles converts server.admin.roles: each role needs a unique name,
// at least one ID pattern and at least one permission.
func adminRoles(errs *config.Errors, path string, td spiffeid.TrustDomain, rs []adminRoleSettings) []adminapi.Role {
	if len(rs) > maxAdminRoles {
		errs.Addf(path, "%d roles, at most %d allowed", len(rs), maxAdminRoles)
		return nil
	}
	var out []adminapi.Role
	var names []string
	for i, r := range rs {
		p := fmt.Sprintf("%s[%d]", path, i)
		role := adminapi.Role{Name: r.Name}
		switch {
		case r.Name == "":
			errs.Addf(config.Join(p, "name"), "required")
		case slices.Contains(names, r.Name):
			errs.Addf(config.Join(p, "name"), "%q is the name of an earlier role", r.Name)
		}
		names = append(names, r.Name)
		if len(r.SPIFFEIDs) == 0 {
			errs.Addf(config.Join(p, "spiffe_ids"), "at least one SPIFFE ID, or an ID followed by /* for every ID under it")
		}
		for j, s := range r.SPIFFEIDs {
			pat, err := adminapi.ParseIDPattern(s, td)
			if err != nil {
				errs.Addf(fmt.Sprintf("%s[%d]", config.Join(p, "spiffe_ids"), j), "%v", err)
				continue
			}
			role.IDs = append(role.IDs, pat)
		}
		if len(r.Permissions) == 0 {
			errs.Addf(config.Join(p, "permissions"), "at least one of read, approve and write")
		}
		for j, s := range r.Permissions {
			perm, err := adminapi.ParsePermission(s)
			if err != nil {
				errs.Addf(fmt.Sprintf("%s[%d]", config.Join(p, "permissions"), j), "%v", err)
				continue
			}
			role.Permissions = append(role.Permissions, perm)
		}
		out = append(out, role)
	}
	return out
}
