package main

import (
	"strings"

	"github.com/spf13/cobra"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// newSVIDShowCmd builds "svid show": unlike its siblings it asks
// nhid-server's ledger, so the svid command's --socket, when given, is the
// admin socket here.
func newSVIDShowCmd(g *globals, socket *string) *cobra.Command {
	return &cobra.Command{
		Use:   "show SERIAL|JTI",
		Short: "Show what an issued SVID was for, from nhid-server's ledger (--socket is the admin socket here)",
		Long: `show asks nhid-server which entry, purpose and owner an SVID was issued
for: an X.509-SVID by its serial (hex; colons and leading zeros as openssl
prints them are fine) or a JWT-SVID by its jti. It talks to the admin socket
(--socket, else $` + envAdminSocket + `, else ` + defaultAdminSocket + `), or over
mutual TLS with --server.`,
		Args: exactArgs("SERIAL|JTI"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a *admin
			var err error
			switch {
			case cmd.Flags().Changed("socket"):
				a, err = dialAdmin(*socket)
			default:
				a, err = g.dial(cmd)
			}
			if err != nil {
				return err
			}
			defer a.Close()
			resp, err := call(cmd, a, adminv1.NewSVIDServiceClient(a.conn).GetIssuedSVID, &adminv1.GetIssuedSVIDRequest{Id: args[0]})
			if err != nil {
				return err
			}
			p := g.printer(cmd)
			if p.isJSON() {
				return p.message(resp)
			}
			return printIssued(p, resp.GetSvid())
		},
	}
}

// svidKind is the kind without its enum prefix, in lower case.
func svidKind(k typesv1.SVIDKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "SVID_KIND_"))
}

func printIssued(p *printer, s *typesv1.IssuedSVID) error {
	return p.record([]field{
		{"ID", s.GetId()},
		{"Kind", svidKind(s.GetKind())},
		{"SPIFFE ID", s.GetSpiffeId()},
		{"Entry ID", s.GetEntryId()},
		{"Node", s.GetNode()},
		{"Purpose", s.GetPurpose()},
		{"Owner", s.GetOwner()},
		{"Audience", joinOrDash(s.GetAudience())},
		{"Issued", unixTime(s.GetIssuedAt(), "-")},
		{"Expires", unixTime(s.GetExpiresAt(), "-")},
	})
}
