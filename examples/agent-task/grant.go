package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/nhid/nhid/pkg/svid"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// identity is the task's X.509-SVID, kept fresh by go-spiffe.
type identity struct {
	source  *workloadapi.X509Source
	svid    *x509svid.SVID
	purpose svid.Purpose
}

// fetchIdentity gets the SVID for spiffeID, or the only one when empty.
func fetchIdentity(ctx context.Context, addr, spiffeID string) (*identity, error) {
	opts := []workloadapi.X509SourceOption{workloadapi.WithClientOptions(workloadapi.WithAddr(addr))}
	if spiffeID != "" {
		opts = append(opts, workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID.String() == spiffeID {
					return s
				}
			}
			return svids[0]
		}))
	}
	src, err := workloadapi.NewX509Source(ctx, opts...)
	if err != nil {
		return nil, err
	}
	s, err := src.GetX509SVID()
	if err != nil {
		src.Close()
		return nil, err
	}
	if spiffeID != "" && s.ID.String() != spiffeID {
		src.Close()
		return nil, fmt.Errorf("this process holds no SVID for %s", spiffeID)
	}
	// The purpose attribute is what nhid issued the SVID for.
	p, _, err := svid.PurposeFromCertificate(s.Certificates[0])
	if err != nil {
		src.Close()
		return nil, err
	}
	return &identity{source: src, svid: s, purpose: p}, nil
}

func (i *identity) Close() { _ = i.source.Close() }

// grantClient calls the Grant API on the agent's socket.
type grantClient struct {
	conn   *grpc.ClientConn
	client grantv1.GrantsClient
}

// newGrantClient connects to the Workload API socket. Every call carries
// the Workload Endpoint's security header, as the Workload API requires.
func newGrantClient(addr string) (*grantClient, error) {
	withHeader := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()), // a local Unix socket; the agent identifies us by the kernel
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withHeader(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withHeader(ctx), desc, cc, method, opts...)
		}))
	if err != nil {
		return nil, err
	}
	return &grantClient{conn: conn, client: grantv1.NewGrantsClient(conn)}, nil
}

func (g *grantClient) Close() { _ = g.conn.Close() }

// request asks for the grant and follows its status. It returns the
// GRANTED status, or nil when the grant was denied.
func (g *grantClient) request(ctx context.Context, o options, out *printer) (*grantv1.GrantStatus, error) {
	stream, err := g.client.Request(ctx, &grantv1.GrantRequest{
		Scopes: o.scopes, Resource: o.resource, Action: o.action, Reason: o.reason,
		Ttl: int32(o.ttl.Seconds()), AuthorizationDetails: o.details, SpiffeId: o.spiffeID,
	})
	if err != nil {
		return nil, err
	}
	for {
		st, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the agent ended the request without a decision")
		}
		if err != nil {
			return nil, err
		}
		out.status(st)
		switch st.GetState() {
		case grantv1.GrantState_GRANT_STATE_GRANTED:
			return st, nil
		case grantv1.GrantState_GRANT_STATE_DENIED:
			return nil, nil
		}
	}
}

func (g *grantClient) release(ctx context.Context, grantID string) error {
	_, err := g.client.Release(ctx, &grantv1.ReleaseRequest{GrantId: grantID})
	return err
}
