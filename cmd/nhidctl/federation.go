package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

// maxBundleDocument bounds what "bundle set" reads: the server refuses
// larger documents anyway (1 MiB).
const maxBundleDocument = 1 << 20

func newFederationCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "federation",
		Short: "Show SPIFFE federation relationships and how their refreshes go",
		Long: `Federated trust domains are partners whose SVIDs this trust domain's workloads
accept. Their bundles are stored by hand ("nhidctl bundle set") or fetched from
their bundle endpoints by the relationships in the server's configuration
(server.federation.federates_with). See docs/federation.md.`,
	}
	cmd.AddCommand(newFederationListCmd(g))
	return cmd
}

func newFederationListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the configured federation relationships with their last and next refresh",
		Long: `List the relationships the server is configured with, as the server answering
sees them: with several servers on one store only the one running the
store-wide jobs refreshes, and the others show no next refresh.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewFederationServiceClient(a.conn).ListFederationRelationships,
					&adminv1.ListFederationRelationshipsRequest{})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				rels := resp.GetRelationships()
				switch {
				case p.isJSON() && len(rels) == 0:
					return p.emptyList("relationships")
				case p.isJSON():
					return p.message(resp)
				case len(rels) == 0:
					return p.line("no federation relationships are configured (server.federation.federates_with)")
				}
				rows := make([][]string, 0, len(rels))
				for _, r := range rels {
					rows = append(rows, []string{
						r.GetTrustDomain(), r.GetProfile(), r.GetBundleEndpointUrl(), r.GetEndpointSpiffeId(),
						unixTime(r.GetLastRefreshAt(), "never"), unixTime(r.GetNextRefreshAt(), "-"),
						sequence(r.GetBundleSequence()), r.GetLastError(),
					})
				}
				return p.table([]string{"TRUST DOMAIN", "PROFILE", "ENDPOINT", "ENDPOINT ID", "LAST REFRESH", "NEXT REFRESH", "SEQUENCE", "LAST ERROR"}, rows)
			})
		},
	}
}

func sequence(n uint64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatUint(n, 10)
}

func newBundleListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the federated bundles: other trust domains' this server trusts",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewFederationServiceClient(a.conn).ListFederatedBundles, &adminv1.ListFederatedBundlesRequest{})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				bundles := resp.GetBundles()
				switch {
				case p.isJSON() && len(bundles) == 0:
					return p.emptyList("bundles")
				case p.isJSON():
					return p.message(resp)
				case len(bundles) == 0:
					return p.line("no federated bundles")
				}
				rows := make([][]string, 0, len(bundles))
				for _, b := range bundles {
					hint := "-"
					if b.GetRefreshHint() > 0 {
						hint = (time.Duration(b.GetRefreshHint()) * time.Second).String()
					}
					rows = append(rows, []string{b.GetTrustDomain(), strconv.Itoa(len(b.GetX509Authorities())),
						strconv.Itoa(len(b.GetJwtAuthorities())), hint, sequence(b.GetSequenceNumber())})
				}
				return p.table([]string{"TRUST DOMAIN", "X.509 AUTHORITIES", "JWT AUTHORITIES", "REFRESH HINT", "SEQUENCE"}, rows)
			})
		},
	}
}

func newBundleSetCmd(g *globals) *cobra.Command {
	var trustDomain, file string
	cmd := &cobra.Command{
		Use:   "set --trust-domain TD --file FILE|-",
		Short: "Store another trust domain's bundle from its SPIFFE bundle document",
		Long: `Store the bundle of a federated trust domain from its SPIFFE bundle document
(what "nhidctl bundle show --format spiffe" prints on a partner's nhid server),
replacing the stored one. Check how the document reached you: whoever wrote it
decides which SVIDs of that trust domain your workloads accept. With a
configured relationship, the next refresh from the partner's endpoint replaces
it again.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if trustDomain == "" {
				return usagef("--trust-domain is required")
			}
			if file == "" {
				return usagef("--file is required (\"-\" reads standard input)")
			}
			doc, err := readBundleDocument(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewFederationServiceClient(a.conn).SetFederatedBundle,
					&adminv1.SetFederatedBundleRequest{TrustDomain: trustDomain, Bundle: doc})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				b := resp.GetBundle()
				return p.line("stored the bundle of %s: %d X.509 and %d JWT authorities, sequence %d",
					b.GetTrustDomain(), len(b.GetX509Authorities()), len(b.GetJwtAuthorities()), b.GetSequenceNumber())
			})
		},
	}
	cmd.Flags().StringVar(&trustDomain, "trust-domain", "", "the federated trust domain, e.g. partner.test")
	cmd.Flags().StringVarP(&file, "file", "f", "", `SPIFFE bundle document ("-" for stdin)`)
	return cmd
}

// readBundleDocument reads at most maxBundleDocument bytes from path, or
// from stdin for "-".
func readBundleDocument(path string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read bundle: %w", err)
		}
		defer f.Close()
		r = f
	}
	doc, err := io.ReadAll(io.LimitReader(r, maxBundleDocument+1))
	if err != nil {
		return nil, fmt.Errorf("read bundle from %s: %w", path, err)
	}
	if len(doc) > maxBundleDocument {
		return nil, fmt.Errorf("%s is larger than 1 MiB: not a bundle document", path)
	}
	return doc, nil
}

func newBundleDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete TRUST_DOMAIN",
		Short: "Forget a federated trust domain's bundle",
		Long: `Forget a federated trust domain's bundle: its SVIDs stop verifying once agents
have the change. A configured relationship fetches it again at its next refresh;
remove the relationship from the server's configuration first to end the
federation.`,
		Args: exactArgs("TRUST_DOMAIN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewFederationServiceClient(a.conn).DeleteFederatedBundle,
					&adminv1.DeleteFederatedBundleRequest{TrustDomain: args[0]})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				return p.line("deleted the bundle of %s", args[0])
			})
		},
	}
}
