package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func newGrantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "grant",
		Short: "Inspect just-in-time grants; revoke them",
	}
	cmd.AddCommand(newGrantListCmd(g), newGrantShowCmd(g), newGrantRevokeCmd(g))
	return cmd
}

// grantStatuses are the names --status takes, in lifecycle order.
var grantStatuses = []string{"pending", "active", "denied", "released", "revoked", "expired"}

// parseGrantStatus maps a --status value to the enum; "" means all.
func parseGrantStatus(s string) (typesv1.GrantStatus, error) {
	if s == "" {
		return typesv1.GrantStatus_GRANT_STATUS_UNSPECIFIED, nil
	}
	v, ok := typesv1.GrantStatus_value["GRANT_STATUS_"+strings.ToUpper(s)]
	if !ok || !slices.Contains(grantStatuses, strings.ToLower(s)) {
		return 0, usagef("--status %q is not one of %s", s, strings.Join(grantStatuses, ", "))
	}
	return typesv1.GrantStatus(v), nil
}

// grantStatus is the status without its enum prefix, in lower case.
func grantStatus(s typesv1.GrantStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "GRANT_STATUS_"))
}

func newGrantListCmd(g *globals) *cobra.Command {
	var spiffeID, status string
	cmd := &cobra.Command{
		Use:   "list [--spiffe-id ID] [--status S]",
		Short: "List grants, newest first",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := parseGrantStatus(status)
			if err != nil {
				return err
			}
			return withAdmin(cmd, g, func(a *admin) error {
				grants, err := listGrants(cmd, a, &adminv1.ListGrantsRequest{SpiffeId: spiffeID, Status: st, PageSize: listPageSize})
				if err != nil {
					return err
				}
				return printGrants(g.printer(cmd), grants)
			})
		},
	}
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "only grants of this SPIFFE ID")
	cmd.Flags().StringVar(&status, "status", "", "only grants in this status: "+strings.Join(grantStatuses, ", "))
	return cmd
}

func listGrants(cmd *cobra.Command, a *admin, req *adminv1.ListGrantsRequest) ([]*typesv1.Grant, error) {
	client := adminv1.NewGrantServiceClient(a.conn)
	var all []*typesv1.Grant
	for {
		resp, err := call(cmd, a, client.ListGrants, req)
		if err != nil {
			return nil, err
		}
		all = append(all, resp.GetGrants()...)
		if resp.GetNextPageToken() == "" {
			return all, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func printGrants(p *printer, grants []*typesv1.Grant) error {
	switch {
	case p.isJSON() && len(grants) == 0:
		return p.emptyList("grants")
	case p.isJSON():
		return p.message(&adminv1.ListGrantsResponse{Grants: grants})
	case len(grants) == 0:
		return p.line("no grants")
	}
	rows := make([][]string, 0, len(grants))
	for _, gr := range grants {
		rows = append(rows, []string{gr.GetId(), gr.GetSpiffeId(), grantStatus(gr.GetStatus()),
			joinOrDash(gr.GetScopes()), gr.GetRule(), unixTime(gr.GetCreatedAt(), "-"), grantEnd(gr)})
	}
	return p.table([]string{"ID", "SPIFFE ID", "STATUS", "SCOPES", "RULE", "CREATED", "ENDS"}, rows)
}

// grantEnd is when a grant ended, else when it expires.
func grantEnd(gr *typesv1.Grant) string {
	if gr.GetEndedAt() != 0 {
		return unixTime(gr.GetEndedAt(), "-")
	}
	return unixTime(gr.GetExpiresAt(), "-")
}

func newGrantShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one grant",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewGrantServiceClient(a.conn).GetGrant, &adminv1.GetGrantRequest{Id: args[0]})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				return printGrant(p, resp.GetGrant())
			})
		},
	}
}

func newGrantRevokeCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke ID --reason TEXT",
		Short: "Revoke a pending or active grant; introspection answers inactive at once",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why the grant is revoked")
			}
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewGrantServiceClient(a.conn).RevokeGrant,
					&adminv1.RevokeGrantRequest{Id: args[0], Reason: reason})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				if err := p.line("revoked grant %s", resp.GetGrant().GetId()); err != nil {
					return err
				}
				return printGrant(p, resp.GetGrant())
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the grant is revoked (required; recorded with the grant)")
	return cmd
}

func printGrant(p *printer, gr *typesv1.Grant) error {
	return p.record([]field{
		{"ID", gr.GetId()},
		{"SPIFFE ID", gr.GetSpiffeId()},
		{"Entry ID", gr.GetEntryId()},
		{"Node", gr.GetNode()},
		{"Purpose", gr.GetPurpose()},
		{"Owner", gr.GetOwner()},
		{"Status", grantStatus(gr.GetStatus())},
		{"Requested scopes", joinOrDash(gr.GetRequestedScopes())},
		{"Scopes", joinOrDash(gr.GetScopes())},
		{"Resource", gr.GetResource()},
		{"Action", gr.GetAction()},
		{"Reason", gr.GetReason()},
		{"Authorization details", gr.GetAuthorizationDetails()},
		{"Requested TTL", seconds(gr.GetRequestedTtl())},
		{"Rule", gr.GetRule()},
		{"Decision reason", gr.GetDecisionReason()},
		{"Created", unixTime(gr.GetCreatedAt(), "-")},
		{"Expires", unixTime(gr.GetExpiresAt(), "-")},
		{"Ended", unixTime(gr.GetEndedAt(), "-")},
		{"Ended by", gr.GetEndedBy()},
	})
}
