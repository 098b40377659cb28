package agenttest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// SyncStream is one open Sync call. The test sends on Send and ends the
// call by sending on End (nil ends it cleanly).
type SyncStream struct {
	Request *agentv1.SyncRequest
	Send    chan *agentv1.SyncResponse
	End     chan error
}

// Server fakes the server's agent API: it mints for the entries it is
// told about (PermissionDenied for others), and hands each Sync call to
// the test through Syncs.
type Server struct {
	agentv1.UnimplementedAgentServiceServer
	CA      *CA
	X509TTL time.Duration
	JWTTTL  time.Duration
	// Syncs receives every Sync call.
	Syncs chan *SyncStream

	mu        sync.Mutex
	node      NodeAttestation
	entries   map[string]*typesv1.Entry
	mintErr   error
	mintCalls int
	csrs      int
	jwtCalls  int
}

// Start serves a fake agent API on a Unix socket in a temporary directory
// and returns it with a client connection to it. Both stop at cleanup.
func Start(t testing.TB, ca *CA) (*Server, *grpc.ClientConn) {
	t.Helper()
	s := &Server{
		CA:      ca,
		X509TTL: time.Hour,
		JWTTTL:  5 * time.Minute,
		Syncs:   make(chan *SyncStream, 16),
		entries: make(map[string]*typesv1.Entry),
	}
	// Not t.TempDir: a long test name would overflow the 107 bytes a Unix
	// socket path may have.
	dir, err := os.MkdirTemp("", "nhid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent-api.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	agentv1.RegisterAgentServiceServer(gs, s)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		gs.Stop()
	})
	return s, conn
}

// SetEntries replaces the entries the server mints for.
func (s *Server) SetEntries(entries ...*typesv1.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = make(map[string]*typesv1.Entry, len(entries))
	for _, e := range entries {
		s.entries[e.GetId()] = e
	}
}

// FailMint makes every mint call fail with err (nil restores service).
func (s *Server) FailMint(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mintErr = err
}

// MintStats returns the number of MintX509SVIDs calls, CSRs signed and
// MintJWTSVID calls so far.
func (s *Server) MintStats() (calls, csrs, jwtCalls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mintCalls, s.csrs, s.jwtCalls
}

// MintX509SVIDs implements agentv1.AgentServiceServer.
func (s *Server) MintX509SVIDs(_ context.Context, req *agentv1.MintX509SVIDsRequest) (*agentv1.MintX509SVIDsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mintCalls++
	if s.mintErr != nil {
		return nil, s.mintErr
	}
	if len(req.GetParams()) > 500 {
		return nil, status.Error(codes.InvalidArgument, "params: more than 500")
	}
	resp := &agentv1.MintX509SVIDsResponse{}
	for _, p := range req.GetParams() {
		resp.Results = append(resp.Results, s.mintOne(p))
	}
	return resp, nil
}

func (s *Server) mintOne(p *agentv1.X509SVIDParams) *agentv1.X509SVIDResult {
	res := &agentv1.X509SVIDResult{EntryId: p.GetEntryId()}
	e, ok := s.entries[p.GetEntryId()]
	if !ok {
		res.Code, res.Message = int32(codes.PermissionDenied), "entry not authorised for this node"
		return res
	}
	id, err := spiffeid.FromString(e.GetSpiffeId())
	if err != nil {
		res.Code, res.Message = int32(codes.Internal), err.Error()
		return res
	}
	ttl := s.X509TTL
	if e.GetX509Ttl() > 0 {
		ttl = time.Duration(e.GetX509Ttl()) * time.Second
	}
	chain, err := s.CA.SignCSR(p.GetCsr(), id, ttl, e.GetDnsNames()...)
	if err != nil {
		res.Code, res.Message = int32(codes.InvalidArgument), err.Error()
		return res
	}
	s.csrs++
	res.SvidChain = chain
	res.ExpiresAt = s.CA.Clock.Now().Add(ttl).Unix()
	return res
}

// MintJWTSVID implements agentv1.AgentServiceServer.
func (s *Server) MintJWTSVID(_ context.Context, req *agentv1.MintJWTSVIDRequest) (*agentv1.MintJWTSVIDResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwtCalls++
	if s.mintErr != nil {
		return nil, s.mintErr
	}
	e, ok := s.entries[req.GetEntryId()]
	if !ok {
		return nil, status.Error(codes.PermissionDenied, "entry not authorised for this node")
	}
	tok, iat, exp, err := s.CA.SignJWT(e.GetSpiffeId(), req.GetAudience(), s.JWTTTL)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &agentv1.MintJWTSVIDResponse{Token: tok, IssuedAt: iat.Unix(), ExpiresAt: exp.Unix()}, nil
}

// Sync implements agentv1.AgentServiceServer by handing the call to the test.
func (s *Server) Sync(req *agentv1.SyncRequest, stream agentv1.AgentService_SyncServer) error {
	st := &SyncStream{Request: req, Send: make(chan *agentv1.SyncResponse, 16), End: make(chan error, 1)}
	select {
	case s.Syncs <- st:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case err := <-st.End:
			return err
		case msg := <-st.Send:
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
	}
}
