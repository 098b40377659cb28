package agent_test

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// listServices asks the agent's Workload Endpoint which services it
// renders, through gRPC server reflection, with or without the security
// header.
func listServices(t *testing.T, socket string, header bool) ([]string, error) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if header {
		ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	}
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

func TestAgent_WorkloadEndpointListsItsServicesByReflection(t *testing.T) {
	srv := startServer(t, t.TempDir())
	token, _ := srv.token(t)
	cfg := agentConfig(t, srv, t.TempDir(), token)
	cfg.TrustBundleFile = srv.bundleFile(t)
	a := startAgent(t, cfg)

	names, err := listServices(t, a.SocketPath(), true)
	if err != nil {
		t.Fatalf("reflection with the security header: %v", err)
	}
	for _, want := range []string{"SpiffeWorkloadAPI", "nhid.grant.v1.Grants"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
	if _, err := listServices(t, a.SocketPath(), false); status.Code(err) != codes.InvalidArgument {
		t.Errorf("reflection without the security header: %v, want InvalidArgument", err)
	}
}
