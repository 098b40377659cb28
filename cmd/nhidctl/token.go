package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage single-use join tokens for node attestation",
	}
	cmd.AddCommand(newTokenGenerateCmd(g), newTokenListCmd(g), newTokenRevokeCmd(g))
	return cmd
}

func newTokenGenerateCmd(g *globals) *cobra.Command {
	var spiffeID string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "generate [--spiffe-id ID] [--ttl DUR]",
		Short: "Generate a join token; it is shown only once",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			secs, err := ttlSeconds("--ttl", ttl)
			if err != nil {
				return err
			}
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewJoinTokenServiceClient(a.conn).GenerateToken,
					&adminv1.GenerateTokenRequest{Ttl: secs, SpiffeId: spiffeID})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				return p.record([]field{
					{"Token", resp.GetToken()},
					{"Agent ID", resp.GetSpiffeId()},
					{"Expires", unixTime(resp.GetExpiresAt(), "-")},
				})
			})
		},
	}
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "agent ID the node gets (default: derived from the token id)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime, e.g. 30m (0 = server default, 10m)")
	return cmd
}

func newTokenListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewJoinTokenServiceClient(a.conn).ListTokens, &adminv1.ListTokensRequest{})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				switch {
				case p.isJSON() && len(resp.GetTokens()) == 0:
					return p.emptyList("tokens")
				case p.isJSON():
					return p.message(resp)
				}
				if len(resp.GetTokens()) == 0 {
					return p.line("no tokens")
				}
				now := time.Now()
				rows := make([][]string, 0, len(resp.GetTokens()))
				for _, t := range resp.GetTokens() {
					rows = append(rows, []string{t.GetId(), t.GetSpiffeId(), unixTime(t.GetCreatedAt(), "-"),
						unixTime(t.GetExpiresAt(), "-"), tokenState(t, now)})
				}
				return p.table([]string{"ID", "AGENT ID", "CREATED", "EXPIRES", "STATE"}, rows)
			})
		},
	}
}

// tokenState says whether a token can still be used.
func tokenState(t *adminv1.TokenInfo, now time.Time) string {
	switch {
	case t.GetUsedAt() != 0:
		return fmt.Sprintf("used %s by %s", unixTime(t.GetUsedAt(), "-"), t.GetUsedBy())
	case now.Unix() > t.GetExpiresAt():
		return "expired"
	default:
		return "unused"
	}
}

func newTokenRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token so no node can use it",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewJoinTokenServiceClient(a.conn).RevokeToken, &adminv1.RevokeTokenRequest{Id: args[0]})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				return p.line("revoked token %s", args[0])
			})
		},
	}
}
