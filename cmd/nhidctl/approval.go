package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func newApprovalCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approval",
		Short: "Decide grants waiting for a person's approval",
		Long: `Grants that policy sends to approval wait, durably, until enough people
approve them (two for critical ones), one denies them, or the approval
timeout passes. You are the approver the server sees on its admin socket
(your uid); nobody may decide a request of their own, nor one of an agent
of the same owner running as them.`,
	}
	cmd.AddCommand(newApprovalListCmd(g), newApprovalApproveCmd(g), newApprovalDenyCmd(g))
	return cmd
}

func newApprovalListCmd(g *globals) *cobra.Command {
	var spiffeID string
	cmd := &cobra.Command{
		Use:   "list [--spiffe-id ID]",
		Short: "List the grants waiting for approval, oldest first",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				client := adminv1.NewApprovalServiceClient(a.conn)
				req := &adminv1.ListApprovalsRequest{SpiffeId: spiffeID, PageSize: listPageSize}
				var all []*typesv1.Grant
				for {
					resp, err := call(cmd, a, client.ListApprovals, req)
					if err != nil {
						return err
					}
					all = append(all, resp.GetGrants()...)
					if resp.GetNextPageToken() == "" {
						break
					}
					req.PageToken = resp.GetNextPageToken()
				}
				return printApprovals(g.printer(cmd), all)
			})
		},
	}
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "only the requests of this SPIFFE ID")
	return cmd
}

func printApprovals(p *printer, grants []*typesv1.Grant) error {
	switch {
	case p.isJSON() && len(grants) == 0:
		return p.emptyList("grants")
	case p.isJSON():
		return p.message(&adminv1.ListApprovalsResponse{Grants: grants})
	case len(grants) == 0:
		return p.line("no grants wait for approval")
	}
	rows := make([][]string, 0, len(grants))
	for _, gr := range grants {
		rows = append(rows, []string{gr.GetId(), gr.GetSpiffeId(), gr.GetOwner(), joinOrDash(gr.GetScopes()),
			resourceAction(gr), gr.GetReason(), approvalCount(gr), unixTime(gr.GetApprovalDeadline(), "-")})
	}
	return p.table([]string{"ID", "SUBJECT", "OWNER", "SCOPES", "RESOURCE/ACTION", "REASON", "APPROVALS", "DEADLINE"}, rows)
}

// resourceAction is "resource/action", leaving out what is empty.
func resourceAction(gr *typesv1.Grant) string {
	switch {
	case gr.GetResource() == "":
		return gr.GetAction()
	case gr.GetAction() == "":
		return gr.GetResource()
	}
	return gr.GetResource() + "/" + gr.GetAction()
}

// approvalCount is "approvals given/required", with the flags that made
// the grant wait.
func approvalCount(gr *typesv1.Grant) string {
	n := 0
	for _, a := range gr.GetApprovals() {
		if a.GetApproved() {
			n++
		}
	}
	s := fmt.Sprintf("%d/%d", n, max(gr.GetApprovalsRequired(), 1))
	var why []string
	if gr.GetCritical() {
		why = append(why, "critical")
	}
	if gr.GetRestricted() {
		why = append(why, "restricted")
	}
	if len(why) > 0 {
		s += " (" + strings.Join(why, ", ") + ")"
	}
	return s
}

func newApprovalApproveCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "approve ID [--reason TEXT]",
		Short: "Approve a pending grant; it is issued once it has every approval it needs",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewApprovalServiceClient(a.conn).Approve,
					&adminv1.ApproveRequest{Id: args[0], Reason: reason})
				if err != nil {
					return err
				}
				return printDecided(g.printer(cmd), resp, resp.GetGrant())
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why you approve (optional; recorded with the approval)")
	return cmd
}

func newApprovalDenyCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "deny ID --reason TEXT",
		Short: "Deny a pending grant; the requesting workload receives the reason",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: the requesting workload receives it")
			}
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewApprovalServiceClient(a.conn).Deny,
					&adminv1.DenyRequest{Id: args[0], Reason: reason})
				if err != nil {
					return err
				}
				return printDecided(g.printer(cmd), resp, resp.GetGrant())
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why you deny (required; the workload receives it)")
	return cmd
}

// printDecided reports a grant after an approval decision.
func printDecided(p *printer, resp proto.Message, gr *typesv1.Grant) error {
	if p.isJSON() {
		return p.message(resp)
	}
	var msg string
	switch gr.GetStatus() {
	case typesv1.GrantStatus_GRANT_STATUS_ACTIVE:
		msg = fmt.Sprintf("grant %s approved: active until %s", gr.GetId(), unixTime(gr.GetExpiresAt(), "-"))
	case typesv1.GrantStatus_GRANT_STATUS_PENDING:
		msg = fmt.Sprintf("approval recorded: grant %s still waits (%s approvals)", gr.GetId(), approvalCount(gr))
	default:
		msg = fmt.Sprintf("grant %s %s: %s", gr.GetId(), grantStatus(gr.GetStatus()), gr.GetDecisionReason())
	}
	if err := p.line("%s", msg); err != nil {
		return err
	}
	return printApprovalGrant(p, gr)
}

// printApprovalGrant prints a grant with its approvals.
func printApprovalGrant(p *printer, gr *typesv1.Grant) error {
	if err := printGrant(p, gr); err != nil {
		return err
	}
	fields := []field{
		{"Approvals", approvalCount(gr)},
		{"Approval deadline", unixTime(gr.GetApprovalDeadline(), "-")},
	}
	for i, a := range gr.GetApprovals() {
		verdict := "approved"
		if !a.GetApproved() {
			verdict = "denied"
		}
		fields = append(fields, field{fmt.Sprintf("Decision %d", i+1),
			fmt.Sprintf("%s %s at %s: %s", a.GetApprover(), verdict, unixTime(a.GetAt(), "-"), cell(a.GetReason()))})
	}
	return p.record(fields)
}
