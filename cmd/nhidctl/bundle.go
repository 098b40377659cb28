package main

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

func newBundleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Show the trust domain's bundle",
	}
	cmd.AddCommand(newBundleShowCmd(g))
	return cmd
}

func newBundleShowCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "show [--format pem|jwks]",
		Short: "Print the bundle: X.509 authorities as PEM (default) or the SPIFFE bundle JWKS",
		Long: `Print the bundle. --format pem prints the X.509 authorities, --format jwks
the SPIFFE bundle document relying parties consume. Without --format, -o json
prints the whole API response (bundle, pem and jwks).`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != formatPEM && format != "jwks" {
				return usagef("--format %q is not one of pem, jwks", format)
			}
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewBundleServiceClient(a.conn).GetBundle, &adminv1.GetBundleRequest{})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				switch {
				case p.isJSON() && !cmd.Flags().Changed("format"):
					return p.message(resp)
				case format == "jwks":
					return printJWKS(p, resp.GetJwks())
				default:
					_, err := fmt.Fprint(p.w, resp.GetPem())
					return err
				}
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", formatPEM, "pem or jwks")
	return cmd
}

// printJWKS indents the server's compact JWKS for reading.
func printJWKS(p *printer, jwks string) error {
	var out bytes.Buffer
	if err := json.Indent(&out, []byte(jwks), "", "  "); err != nil {
		return fmt.Errorf("server sent a malformed JWKS: %w", err)
	}
	out.WriteByte('\n')
	_, err := p.w.Write(out.Bytes())
	return err
}
