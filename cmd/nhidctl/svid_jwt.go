package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// maxTokenLen bounds a JWT read from stdin.
const maxTokenLen = 64 << 10

func newSVIDValidateJWTCmd(g *globals, socket *string) *cobra.Command {
	var audience, token string
	cmd := &cobra.Command{
		Use:   "validate-jwt --audience A --token T",
		Short: "Validate a JWT-SVID through the Workload API and print its SPIFFE ID and claims",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if audience == "" || token == "" {
				return usagef("--audience and --token are required")
			}
			if token == "-" {
				var err error
				if token, err = readToken(cmd); err != nil {
					return err
				}
			}
			addr, err := workloadAddr(*socket)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
			defer cancel()
			svid, err := workloadapi.ValidateJWTSVID(ctx, token, audience, workloadapi.WithAddr(addr))
			if err != nil {
				return explainWorkload(addr, err)
			}
			claims, err := json.Marshal(svid.Claims)
			if err != nil {
				return fmt.Errorf("encode claims: %w", err)
			}
			p := g.printer(cmd)
			if p.isJSON() {
				enc := json.NewEncoder(p.w)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					SpiffeID string          `json:"spiffe_id"`
					Claims   json.RawMessage `json:"claims"`
				}{svid.ID.String(), claims})
			}
			return p.record([]field{
				{"SPIFFE ID", svid.ID.String()},
				{"Audience", strings.Join(svid.Audience, ",")},
				{"Expires", svid.Expiry.UTC().Format(time.RFC3339)},
				{"Claims", string(claims)},
			})
		},
	}
	cmd.Flags().StringVar(&audience, "audience", "", "audience the token must be for")
	cmd.Flags().StringVar(&token, "token", "", `the JWT-SVID, or "-" to read it from stdin (keeps it out of the process list)`)
	return cmd
}

func readToken(cmd *cobra.Command) (string, error) {
	sc := bufio.NewScanner(cmd.InOrStdin())
	sc.Buffer(make([]byte, 0, 4096), maxTokenLen)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return "", fmt.Errorf("read token from stdin: %w", err)
		}
		return "", usagef("--token -: stdin is empty")
	}
	return strings.TrimSpace(sc.Text()), nil
}
