package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agentid"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// errNotConnected answers calls made before the agent holds an SVID.
var errNotConnected = status.Error(codes.Unavailable, "not connected to the server: the agent has no valid SVID yet")

// refusal is the server refusing the node itself, as opposed to a call.
type refusal struct {
	banned bool
	reason string
}

func (r *refusal) Error() string { return r.reason }

// classify recognises the PermissionDenied answers the server gives a node
// it no longer serves (see docs/ARCHITECTURE.md, agent API authentication).
func classify(err error) *refusal {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return nil
	}
	msg := st.Message()
	switch {
	case strings.Contains(msg, "banned"):
		return &refusal{banned: true, reason: msg}
	case strings.Contains(msg, "evicted"), strings.Contains(msg, "superseded"), strings.Contains(msg, "attest again"):
		return &refusal{reason: msg}
	}
	return nil
}

// serverConn is the agent's connection to the server's agent API. It is
// replaced whole after every attestation and renewal, so long-lived
// streams move to the new SVID at once. Calls made through it report the
// server refusing the node on refusals; those from a replaced connection
// are ignored, since a superseded SVID is expected there.
type serverConn struct {
	mu       sync.Mutex
	conn     *grpc.ClientConn
	client   agentv1.AgentServiceClient
	gen      uint64
	refusals chan *refusal
	grants   grantStreams // grant requests in flight, per connection (grants.go)
}

func newServerConn() *serverConn {
	return &serverConn{refusals: make(chan *refusal, 1)}
}

// current returns the client to call and its generation.
func (s *serverConn) current() (agentv1.AgentServiceClient, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client, s.gen
}

// swap installs conn (nil disconnects) and returns the connection it
// replaces, for the caller to close. Refusals seen on older connections
// are dropped.
func (s *serverConn) swap(conn *grpc.ClientConn) *grpc.ClientConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.conn
	s.conn, s.gen = conn, s.gen+1
	s.client = nil
	if conn != nil {
		s.client = agentv1.NewAgentServiceClient(conn)
	}
	select {
	case <-s.refusals:
	default:
	}
	return old
}

func (s *serverConn) observe(gen uint64, err error) {
	r := classify(err)
	if r == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return
	}
	select {
	case s.refusals <- r:
	default:
	}
}

// MintX509SVIDs implements manager.Minter.
func (s *serverConn) MintX509SVIDs(ctx context.Context, in *agentv1.MintX509SVIDsRequest, opts ...grpc.CallOption) (*agentv1.MintX509SVIDsResponse, error) {
	c, gen := s.current()
	if c == nil {
		return nil, errNotConnected
	}
	resp, err := c.MintX509SVIDs(ctx, in, opts...)
	s.observe(gen, err)
	return resp, err
}

// MintJWTSVID implements manager.Minter.
func (s *serverConn) MintJWTSVID(ctx context.Context, in *agentv1.MintJWTSVIDRequest, opts ...grpc.CallOption) (*agentv1.MintJWTSVIDResponse, error) {
	c, gen := s.current()
	if c == nil {
		return nil, errNotConnected
	}
	resp, err := c.MintJWTSVID(ctx, in, opts...)
	s.observe(gen, err)
	return resp, err
}

// Sync implements entrysync.Syncer.
func (s *serverConn) Sync(ctx context.Context, in *agentv1.SyncRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[agentv1.SyncResponse], error) {
	c, gen := s.current()
	if c == nil {
		return nil, errNotConnected
	}
	st, err := c.Sync(ctx, in, opts...)
	if err != nil {
		s.observe(gen, err)
		return nil, err
	}
	return &observedStream{ServerStreamingClient: st, s: s, gen: gen}, nil
}

// observedStream reports refusals that end a Sync stream: the server
// checks the node when the stream starts, so they arrive on Recv.
type observedStream struct {
	grpc.ServerStreamingClient[agentv1.SyncResponse]
	s   *serverConn
	gen uint64
}

func (o *observedStream) Recv() (*agentv1.SyncResponse, error) {
	msg, err := o.ServerStreamingClient.Recv()
	if err != nil {
		o.s.observe(o.gen, err)
	}
	return msg, err
}

// dial connects to the server with TLS 1.3, authorising exactly the
// server's SPIFFE ID against bundle, and presenting svid when it is not
// nil. The sources are read at every handshake, so rotated bundles and
// SVIDs take effect on reconnection.
func dial(addr string, td spiffeid.TrustDomain, svid x509svid.Source, bundle x509bundle.Source, log *slog.Logger) (*grpc.ClientConn, error) {
	authz := tlsconfig.AuthorizeID(agentid.Server(td))
	var conf *tls.Config
	if svid != nil {
		conf = tlsconfig.MTLSClientConfig(svid, bundle, authz)
	} else {
		conf = tlsconfig.TLSClientConfig(bundle, authz)
	}
	conf.MinVersion = tls.VersionTLS13
	return newClient(addr, conf, log)
}

// maxServerMessage bounds one message from nhid-server. Sync pages of
// entries stay under 3 MiB, but the federated bundle set travels whole in
// one message, and partners' documents may be up to 1 MiB each.
const maxServerMessage = 64 << 20

// newClient connects to any of the servers addr lists (servers.go).
func newClient(addr string, conf *tls.Config, log *slog.Logger) (*grpc.ClientConn, error) {
	target, opts := serverTarget(addr, log)
	conn, err := grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(conf)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxServerMessage)))...)
	if err != nil {
		return nil, fmt.Errorf("connect to server %s: %w", addr, err)
	}
	return conn, nil
}

// insecureDial connects without verifying the server, for the one
// bootstrap attestation --insecure-bootstrap allows. The certificates the
// server presented are kept, so that the agent can check afterwards that
// they chain to the bundle the server sent.
func insecureDial(addr string, log *slog.Logger) (*grpc.ClientConn, *peerCerts, error) {
	pc := &peerCerts{}
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, //nolint:gosec // explicitly requested by --insecure-bootstrap; checked after the fact
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			pc.set(raw)
			return nil
		},
	}
	conn, err := newClient(addr, conf, log)
	return conn, pc, err
}

// peerCerts holds the chain a server presented.
type peerCerts struct {
	mu  sync.Mutex
	raw [][]byte
}

func (p *peerCerts) set(raw [][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.raw = raw
}

// verify checks the presented chain is an X.509-SVID for the server's ID
// under bundle.
func (p *peerCerts) verify(td spiffeid.TrustDomain, bundle x509bundle.Source) error {
	p.mu.Lock()
	raw := p.raw
	p.mu.Unlock()
	if len(raw) == 0 {
		return errors.New("the server presented no certificate")
	}
	id, _, err := x509svid.ParseAndVerify(raw, bundle)
	if err != nil {
		return fmt.Errorf("the server's certificate does not chain to the bundle it sent: %w", err)
	}
	if id != agentid.Server(td) {
		return fmt.Errorf("the server presented the SPIFFE ID %s, want %s", id, agentid.Server(td))
	}
	return nil
}
