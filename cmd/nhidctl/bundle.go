package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func newBundleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Show the trust domain's bundle; manage federated trust domains' bundles",
	}
	cmd.AddCommand(newBundleShowCmd(g), newBundleListCmd(g), newBundleSetCmd(g), newBundleDeleteCmd(g))
	return cmd
}

// formatSPIFFE names the SPIFFE bundle document, which is a JWKS: the
// format partners exchange to bootstrap federation.
const formatSPIFFE = "spiffe"

func newBundleShowCmd(g *globals) *cobra.Command {
	var format, trustDomain string
	cmd := &cobra.Command{
		Use:   "show [--format pem|jwks|spiffe] [--trust-domain TD]",
		Short: "Print the bundle: X.509 authorities as PEM (default) or the SPIFFE bundle document",
		Long: `Print the bundle. --format pem prints the X.509 authorities, --format spiffe
(or jwks, the same document) the SPIFFE bundle document that relying parties
consume and federated partners take as their bootstrap bundle. Without
--format, -o json prints the whole API response (bundle, pem and jwks).
--trust-domain prints a federated trust domain's stored bundle instead.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != formatPEM && format != "jwks" && format != formatSPIFFE {
				return usagef("--format %q is not one of pem, jwks, spiffe", format)
			}
			return withAdmin(cmd, g, func(a *admin) error {
				var resp interface {
					proto.Message
					GetJwks() string
				}
				var pemText string
				if trustDomain != "" {
					r, err := call(cmd, a, adminv1.NewFederationServiceClient(a.conn).GetFederatedBundle,
						&adminv1.GetFederatedBundleRequest{TrustDomain: trustDomain})
					if err != nil {
						return err
					}
					resp, pemText = r, authoritiesPEM(r.GetBundle())
				} else {
					r, err := call(cmd, a, adminv1.NewBundleServiceClient(a.conn).GetBundle, &adminv1.GetBundleRequest{})
					if err != nil {
						return err
					}
					resp, pemText = r, r.GetPem()
				}
				p := g.printer(cmd)
				switch {
				case p.isJSON() && !cmd.Flags().Changed("format"):
					return p.message(resp)
				case format == "jwks" || format == formatSPIFFE:
					return printJWKS(p, resp.GetJwks())
				default:
					_, err := fmt.Fprint(p.w, pemText)
					return err
				}
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", formatPEM, "pem, or spiffe (jwks) for the SPIFFE bundle document")
	cmd.Flags().StringVar(&trustDomain, "trust-domain", "", "show this federated trust domain's bundle instead of the server's own")
	return cmd
}

// authoritiesPEM is a bundle's X.509 authorities as PEM.
func authoritiesPEM(b *typesv1.Bundle) string {
	var out strings.Builder
	for _, a := range b.GetX509Authorities() {
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: a.GetAsn1()})
	}
	return out.String()
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
