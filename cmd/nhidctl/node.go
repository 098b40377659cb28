package main

import (
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Inspect attested nodes (agents); evict, ban or unban them",
	}
	cmd.AddCommand(
		newNodeListCmd(g),
		nodeActionCmd(g, "show", "Show one node", "", func(cmd *cobra.Command, a *admin, id string) (nodeResponse, error) {
			return call(cmd, a, adminv1.NewNodeServiceClient(a.conn).GetNode, &adminv1.GetNodeRequest{SpiffeId: id})
		}),
		nodeActionCmd(g, "evict", "Make a node attest again before it is served", "evicted", func(cmd *cobra.Command, a *admin, id string) (nodeResponse, error) {
			return call(cmd, a, adminv1.NewNodeServiceClient(a.conn).EvictNode, &adminv1.EvictNodeRequest{SpiffeId: id})
		}),
		nodeActionCmd(g, "ban", "Refuse a node until it is unbanned", "banned", func(cmd *cobra.Command, a *admin, id string) (nodeResponse, error) {
			return call(cmd, a, adminv1.NewNodeServiceClient(a.conn).BanNode, &adminv1.BanNodeRequest{SpiffeId: id})
		}),
		nodeActionCmd(g, "unban", "Lift a ban; the node must attest again", "unbanned", func(cmd *cobra.Command, a *admin, id string) (nodeResponse, error) {
			return call(cmd, a, adminv1.NewNodeServiceClient(a.conn).UnbanNode, &adminv1.UnbanNodeRequest{SpiffeId: id})
		}),
	)
	return cmd
}

// nodeResponse is what every per-node RPC answers.
type nodeResponse interface {
	proto.Message
	GetNode() *typesv1.Node
}

// nodeActionCmd builds "node VERB SPIFFE_ID": the per-node commands differ
// only in the RPC they call.
func nodeActionCmd(g *globals, verb, short, done string, rpc func(*cobra.Command, *admin, string) (nodeResponse, error)) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " SPIFFE_ID",
		Short: short,
		Args:  exactArgs("SPIFFE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := rpc(cmd, a, args[0])
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				if done != "" {
					if err := p.line("%s node %s", done, resp.GetNode().GetSpiffeId()); err != nil {
						return err
					}
				}
				return printNode(p, resp.GetNode())
			})
		},
	}
}

func newNodeListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List attested nodes",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				nodes, err := listNodes(cmd, a)
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				switch {
				case p.isJSON() && len(nodes) == 0:
					return p.emptyList("nodes")
				case p.isJSON():
					return p.message(&adminv1.ListNodesResponse{Nodes: nodes})
				}
				if len(nodes) == 0 {
					return p.line("no nodes")
				}
				rows := make([][]string, 0, len(nodes))
				for _, n := range nodes {
					rows = append(rows, []string{n.GetSpiffeId(), n.GetAttestorType(), nodeStatus(n.GetStatus()),
						unixTime(n.GetSvidExpiresAt(), "-"), unixTime(n.GetLastSeenAt(), "never")})
				}
				return p.table([]string{"SPIFFE ID", "ATTESTOR", "STATUS", "SVID EXPIRES", "LAST SEEN"}, rows)
			})
		},
	}
}

func listNodes(cmd *cobra.Command, a *admin) ([]*typesv1.Node, error) {
	client := adminv1.NewNodeServiceClient(a.conn)
	req := &adminv1.ListNodesRequest{PageSize: listPageSize}
	var all []*typesv1.Node
	for {
		resp, err := call(cmd, a, client.ListNodes, req)
		if err != nil {
			return nil, err
		}
		all = append(all, resp.GetNodes()...)
		if resp.GetNextPageToken() == "" {
			return all, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// nodeStatus is the status without its enum prefix, in lower case.
func nodeStatus(s typesv1.NodeStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "NODE_STATUS_"))
}

func printNode(p *printer, n *typesv1.Node) error {
	return p.record([]field{
		{"SPIFFE ID", n.GetSpiffeId()},
		{"Attestor", n.GetAttestorType()},
		{"Status", nodeStatus(n.GetStatus())},
		{"Status reason", n.GetStatusReason()},
		{"Selectors", joinOrDash(n.GetSelectors())},
		{"SVID serial", n.GetSvidSerial()},
		{"SVID expires", unixTime(n.GetSvidExpiresAt(), "-")},
		{"Attested", unixTime(n.GetAttestedAt(), "-")},
		{"Last seen", unixTime(n.GetLastSeenAt(), "never")},
	})
}
