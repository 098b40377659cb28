package main

import (
	"github.com/spf13/cobra"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func newEntryListCmd(g *globals) *cobra.Command {
	var filter adminv1.ListEntriesRequest
	cmd := &cobra.Command{
		Use:   "list [--spiffe-id ID] [--parent-id ID] [--selector TYPE:VALUE...]",
		Short: "List entries matching every filter given",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				entries, err := listEntries(cmd, a, &filter)
				if err != nil {
					return err
				}
				return printEntries(g.printer(cmd), entries)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&filter.SpiffeId, "spiffe-id", "", "only entries with this SPIFFE ID")
	fs.StringVar(&filter.ParentId, "parent-id", "", "only entries under this parent")
	fs.StringArrayVar(&filter.Selectors, "selector", nil, "only entries having this selector; repeat for several")
	return cmd
}

// listEntries follows every page of a listing.
func listEntries(cmd *cobra.Command, a *admin, filter *adminv1.ListEntriesRequest) ([]*typesv1.Entry, error) {
	client := adminv1.NewEntryServiceClient(a.conn)
	req := &adminv1.ListEntriesRequest{
		SpiffeId:  filter.GetSpiffeId(),
		ParentId:  filter.GetParentId(),
		Selectors: filter.GetSelectors(),
		PageSize:  listPageSize,
	}
	var all []*typesv1.Entry
	for {
		resp, err := call(cmd, a, client.ListEntries, req)
		if err != nil {
			return nil, err
		}
		all = append(all, resp.GetEntries()...)
		if resp.GetNextPageToken() == "" {
			return all, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// printEntries prints a listing; its JSON is what "entry create -f" reads.
func printEntries(p *printer, entries []*typesv1.Entry) error {
	switch {
	case p.isJSON() && len(entries) == 0:
		return p.emptyList("entries")
	case p.isJSON():
		return p.message(&adminv1.ListEntriesResponse{Entries: entries})
	}
	if len(entries) == 0 {
		return p.line("no entries")
	}
	rows := make([][]string, 0, len(entries))
	for _, e := range entries {
		rows = append(rows, []string{e.GetId(), e.GetSpiffeId(), e.GetParentId(),
			joinOrDash(e.GetSelectors()), e.GetOwner(), e.GetPurpose()})
	}
	return p.table([]string{"ID", "SPIFFE ID", "PARENT ID", "SELECTORS", "OWNER", "PURPOSE"}, rows)
}
