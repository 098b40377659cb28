package main

import (
	"fmt"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func newHealthcheckCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "healthcheck",
		Short: "Check nhid-server is serving; exits 0 only if it is",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, healthpb.NewHealthClient(a.conn).Check, &healthpb.HealthCheckRequest{})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					if err := p.message(resp); err != nil {
						return err
					}
				} else if err := p.line("%s", resp.GetStatus()); err != nil {
					return err
				}
				if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					return fmt.Errorf("nhid-server at %s is %s", a.target, resp.GetStatus())
				}
				return nil
			})
		},
	}
}
