package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// errStreamEnded answers a challenge whose Reattest stream went away.
var errStreamEnded = errors.New("the node's Reattest stream ended before it answered")

// Reattest is the continuous attestation channel (see the proto and
// reattest_sched.go): it registers the node's stream with the scheduler,
// sends the challenges the scheduler's rounds make, and delivers the
// agent's answers to them. One stream per node: a newer one replaces an
// older one, which ends with Aborted.
func (s *Service) Reattest(stream agentv1.AgentService_ReattestServer) error {
	ctx := stream.Context()
	c, err := callerFrom(ctx)
	if err != nil {
		return err
	}
	r, ok := s.reattesters[c.node.GetAttestorType()]
	if !ok {
		// Nothing to attest continuously: the agent stops asking.
		return nil
	}
	conn := &reattestConn{
		nodeID: c.id.String(), agentID: c.id, typ: c.node.GetAttestorType(),
		out: make(chan *agentv1.ReattestResponse), done: make(chan struct{}),
		pending: make(map[uint64]chan answer), log: telemetry.Logger(ctx, s.log),
	}
	defer conn.end(nil)
	if old := s.hub.register(conn); old != nil {
		old.end(status.Error(codes.Aborted, "superseded by a newer Reattest stream of the node"))
	}
	defer s.hub.unregister(conn)
	s.metrics.reattestStreams.Inc()
	defer s.metrics.reattestStreams.Dec()
	s.sched.schedule(conn, s.firstDue(c.node.GetVerifiedAt(), c.node.GetAttestedAt(), r.ReattestInterval()))

	received := make(chan error, 1)
	go func() { received <- conn.receive(stream, &s.hub.nextID) }()
	for {
		select {
		case msg := <-conn.out:
			if err := stream.Send(msg); err != nil {
				return err
			}
		case err := <-received:
			return err
		case <-conn.done:
			return conn.endErr()
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "server shutting down; reconnect")
		}
	}
}

// addReattester records v, the i-th verifier, when it attests nodes
// continuously, and sweeps for overdue nodes often enough that a node is
// found overdue within half its grace.
func (s *Service) addReattester(i int, v attestor.NodeVerifier) error {
	r, ok := v.(attestor.NodeReattester)
	if !ok {
		return nil
	}
	interval := r.ReattestInterval()
	if interval < time.Second {
		return fmt.Errorf("agentapi config: Verifiers[%d]: %s reattests every %v, less than 1s", i, v.Type(), interval)
	}
	s.reattesters[v.Type()] = r
	every := min(maxSweepEvery, overdueGrace(interval)/2)
	if s.sweepEvery == 0 || every < s.sweepEvery {
		s.sweepEvery = every
	}
	return nil
}

// reattestHub holds the open Reattest streams by node.
type reattestHub struct {
	mu     sync.Mutex
	conns  map[string]*reattestConn
	nextID atomic.Uint64
}

func newReattestHub() *reattestHub {
	return &reattestHub{conns: make(map[string]*reattestConn)}
}

// register makes c the node's stream and returns the one it replaces.
func (h *reattestHub) register(c *reattestConn) *reattestConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.conns[c.nodeID]
	h.conns[c.nodeID] = c
	return old
}

func (h *reattestHub) unregister(c *reattestConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns[c.nodeID] == c {
		delete(h.conns, c.nodeID)
	}
}

// reattestConn is one open Reattest stream.
type reattestConn struct {
	nodeID  string
	agentID spiffeid.ID
	typ     string
	log     *slog.Logger
	// out carries challenges to the handler, which alone sends.
	out  chan *agentv1.ReattestResponse
	done chan struct{}

	mu      sync.Mutex
	ended   bool
	err     error
	pending map[uint64]chan answer
}

// answer is the agent's answer to one challenge.
type answer struct {
	response []byte
	err      error
}

// end closes the stream's side of things; err, if set, is what the
// handler returns.
func (c *reattestConn) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.ended, c.err = true, err
	close(c.done)
}

func (c *reattestConn) endErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *reattestConn) live() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// receive delivers the agent's answers until the stream ends. An answer
// to no pending challenge (unknown, timed out or already answered) is
// refused: each challenge is answered at most once.
func (c *reattestConn) receive(stream agentv1.AgentService_ReattestServer, ids *atomic.Uint64) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if size := proto.Size(req); size > maxAttestMessage {
			return status.Errorf(codes.InvalidArgument, "reattest answer of %d bytes exceeds %d", size, maxAttestMessage)
		}
		id := req.GetChallengeId()
		if id == 0 || id > ids.Load() {
			return status.Errorf(codes.InvalidArgument, "challenge_id: %d was never sent", id)
		}
		a := answer{response: req.GetResponse()}
		if msg := req.GetError(); msg != "" {
			a = answer{err: fmt.Errorf("the agent could not answer: %.512s", msg)}
		}
		if !c.deliver(id, a) {
			c.log.Warn("continuous attestation answer refused", telemetry.Reason,
				fmt.Sprintf("challenge %d is not pending: already answered or expired", id))
		}
	}
}

func (c *reattestConn) deliver(id uint64, a answer) bool {
	c.mu.Lock()
	ch, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ok {
		ch <- a // buffered; the only send
	}
	return ok
}

// challenger reaches the agent over this stream: each call sends one
// challenge, with a fresh id, and waits for its answer until ctx ends.
func (c *reattestConn) challenger(ids *atomic.Uint64) attestor.Challenger {
	return func(ctx context.Context, challenge []byte) ([]byte, error) {
		if len(challenge) > maxAttestMessage-64 {
			return nil, fmt.Errorf("attestor challenge of %d bytes is too large", len(challenge))
		}
		id := ids.Add(1)
		ch := make(chan answer, 1)
		c.mu.Lock()
		c.pending[id] = ch
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			delete(c.pending, id)
			c.mu.Unlock()
		}()
		msg := &agentv1.ReattestResponse{ChallengeId: id, Challenge: challenge}
		if d, ok := ctx.Deadline(); ok {
			msg.Deadline = d.Unix()
		}
		select {
		case c.out <- msg:
		case <-c.done:
			return nil, errStreamEnded
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case a := <-ch:
			return a.response, a.err
		case <-c.done:
			return nil, errStreamEnded
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
