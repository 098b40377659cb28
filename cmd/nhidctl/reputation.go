package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func newReputationCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reputation",
		Short: "Show reputation scores and the events behind them; reset a score",
		Long: `Every SPIFFE ID has a 0-1000 score that starts at the baseline (500),
moves with grant outcomes and misuse reports, and decays back toward the
baseline. Below the alert threshold the owner is notified; below the
restrict threshold every new grant needs approval (docs/reputation.md).`,
	}
	cmd.AddCommand(newReputationListCmd(g), newReputationShowCmd(g), newReputationResetCmd(g))
	return cmd
}

func newReputationListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List scores, decayed to now, by SPIFFE ID",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				client := adminv1.NewReputationServiceClient(a.conn)
				req := &adminv1.ListReputationsRequest{PageSize: listPageSize}
				var all []*typesv1.Reputation
				for {
					resp, err := call(cmd, a, client.ListReputations, req)
					if err != nil {
						return err
					}
					all = append(all, resp.GetReputations()...)
					if resp.GetNextPageToken() == "" {
						break
					}
					req.PageToken = resp.GetNextPageToken()
				}
				return printReputations(g.printer(cmd), all)
			})
		},
	}
}

func printReputations(p *printer, rs []*typesv1.Reputation) error {
	switch {
	case p.isJSON() && len(rs) == 0:
		return p.emptyList("reputations")
	case p.isJSON():
		return p.message(&adminv1.ListReputationsResponse{Reputations: rs})
	case len(rs) == 0:
		return p.line("no reputation scores yet")
	}
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		rows = append(rows, []string{r.GetSpiffeId(), repScore(r.GetScore()), repStanding(r), r.GetOwner()})
	}
	return p.table([]string{"SPIFFE ID", "SCORE", "STANDING", "OWNER"}, rows)
}

func newReputationShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show SPIFFE_ID",
		Short: "Show one score and the recent events behind it, newest first",
		Args:  exactArgs("SPIFFE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewReputationServiceClient(a.conn).GetReputation,
					&adminv1.GetReputationRequest{SpiffeId: args[0]})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				return printReputation(p, resp.GetReputation())
			})
		},
	}
}

func newReputationResetCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "reset SPIFFE_ID --reason TEXT",
		Short: "Set a score back to the baseline, lifting its alert and restriction",
		Args:  exactArgs("SPIFFE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why the score is reset")
			}
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewReputationServiceClient(a.conn).ResetReputation,
					&adminv1.ResetReputationRequest{SpiffeId: args[0], Reason: reason})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				r := resp.GetReputation()
				if err := p.line("reset the reputation of %s to %s", cell(r.GetSpiffeId()), repScore(r.GetScore())); err != nil {
					return err
				}
				return printReputation(p, r)
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the score is reset (required; recorded as an event)")
	return cmd
}

func printReputation(p *printer, r *typesv1.Reputation) error {
	if err := p.record([]field{
		{"SPIFFE ID", r.GetSpiffeId()},
		{"Score", repScore(r.GetScore())},
		{"Standing", repStanding(r)},
		{"Owner", r.GetOwner()},
	}); err != nil {
		return err
	}
	if len(r.GetEvents()) == 0 {
		return nil
	}
	if err := p.line("\nEvents (newest first):"); err != nil {
		return err
	}
	rows := make([][]string, 0, len(r.GetEvents()))
	for _, e := range r.GetEvents() {
		rows = append(rows, []string{repEventTime(e.GetAt()), e.GetKind(), repDelta(e.GetDelta()), repScore(e.GetScoreAfter()),
			e.GetReporter(), e.GetGrantId(), e.GetReason()})
	}
	return p.table([]string{"AT", "KIND", "DELTA", "SCORE", "REPORTER", "GRANT", "REASON"}, rows)
}

// repStanding says what a score entails.
func repStanding(r *typesv1.Reputation) string {
	switch {
	case r.GetRestricted():
		return "restricted"
	case r.GetAlerted():
		return "alert"
	}
	return "ok"
}

// repScore rounds a score for people; JSON keeps the exact value.
func repScore(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }

// repDelta shows a change with its sign.
func repDelta(v float64) string { return fmt.Sprintf("%+.0f", v) }

func repEventTime(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339)
}
