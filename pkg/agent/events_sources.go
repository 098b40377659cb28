package agent

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agent/grants"
	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/workloadapi"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// Workload event kinds, as proto nhid.agent.v1.WorkloadEvent spells them.
const (
	eventAttestationFailed = "attestation_failed"
	eventNotEntitled       = "not_entitled"
)

// Field bounds of a workload event: the server's (agentapi, events.go),
// which refuses a whole batch over them.
const (
	maxEventPath     = 4096
	maxEventMethod   = 256
	maxEventReason   = 1024
	maxEventSPIFFEID = 2048
)

// Refusals the Grant API decides on the agent (pkg/agent/grants), told
// apart by their message from those the server sends through, which the
// server has already seen.
const (
	grantNoIdentity = grants.NoIdentityMessage
	grantNotHeld    = grants.NotHeldSuffix
)

var grantServicePrefix = "/" + grantv1.Grants_ServiceDesc.ServiceName + "/"

// callMark travels in a Workload or Grant API call's context from the
// interceptor to the attestor, so that a refusal after a failed
// attestation is reported once (as attestation_failed), and so that the
// attestation failure names the identity the caller asked for.
type callMark struct {
	spiffeID     string
	attestFailed bool
}

type callMarkKey struct{}

func markOf(ctx context.Context) *callMark {
	m, _ := ctx.Value(callMarkKey{}).(*callMark)
	return m
}

// reportingAttestor reports the failures of the workload attestor it
// wraps.
type reportingAttestor struct {
	workloadapi.Attestor
	r *eventReporter
}

// attestor returns a as a workloadapi.Attestor that reports its failures.
func (r *eventReporter) attestor(a workloadapi.Attestor) workloadapi.Attestor {
	return &reportingAttestor{Attestor: a, r: r}
}

// Attest attests pid; a failure, unless the caller left meanwhile, is
// reported.
func (a *reportingAttestor) Attest(ctx context.Context, pid int32) (selector.Set, error) {
	sels, err := a.Attestor.Attest(ctx, pid)
	if err == nil || ctx.Err() != nil {
		return sels, err
	}
	ev := newEvent(ctx, eventAttestationFailed, pid, "workload attestation failed: "+err.Error())
	if m := markOf(ctx); m != nil {
		m.attestFailed = true
		ev.SpiffeId = m.spiffeID
	}
	a.r.add(ev)
	return sels, err
}

// onRefused is the Workload API's workloadapi.Config.OnRefused.
func (r *eventReporter) onRefused(ref workloadapi.Refusal) {
	reason := "entitled to no identity"
	if ref.SPIFFEID != "" {
		reason = "asked for an identity it does not hold"
	}
	ev := &agentv1.WorkloadEvent{
		Time: time.Now().UnixNano(), Kind: eventNotEntitled,
		Pid: ref.PID, Uid: ref.UID, Gid: ref.GID, Path: exePath(ref.PID),
		Method: clean(ref.Method, maxEventMethod), SpiffeId: cleanID(ref.SPIFFEID), Reason: reason,
	}
	r.add(ev)
}

// interceptors mark every Workload and Grant API call for the attestor
// and report the Grant API's refusals of attested callers. The Workload
// API reports its own through onRefused.
func (r *eventReporter) interceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		m := &callMark{}
		if named, ok := req.(interface{ GetSpiffeId() string }); ok {
			m.spiffeID = cleanID(named.GetSpiffeId())
		}
		resp, err := handler(context.WithValue(ctx, callMarkKey{}, m), req)
		r.grantRefused(ctx, info.FullMethod, m, err)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		m := &callMark{}
		ms := &markedStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callMarkKey{}, m), mark: m}
		err := handler(srv, ms)
		r.grantRefused(ss.Context(), info.FullMethod, m, err)
		return err
	}
	return unary, stream
}

// grantRefused reports a Grant API call refused on the agent after its
// caller was attested.
func (r *eventReporter) grantRefused(ctx context.Context, method string, m *callMark, err error) {
	if !strings.HasPrefix(method, grantServicePrefix) || m.attestFailed || ctx.Err() != nil {
		return
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return
	}
	reason := "entitled to no identity"
	switch msg := st.Message(); {
	case strings.HasSuffix(msg, grantNotHeld):
		reason = "asked for an identity it does not hold"
	case msg != grantNoIdentity:
		return // the server's refusal, passed through: the server saw it
	}
	proc, ok := peercred.FromContext(ctx)
	if !ok {
		return
	}
	ev := newEvent(ctx, eventNotEntitled, proc.PID(), reason)
	ev.SpiffeId = m.spiffeID
	r.add(ev)
}

// markedStream hands the marked context to a stream handler and notes the
// SPIFFE ID its request names.
type markedStream struct {
	grpc.ServerStream
	ctx  context.Context
	mark *callMark
}

func (s *markedStream) Context() context.Context { return s.ctx }

func (s *markedStream) RecvMsg(msg any) error {
	err := s.ServerStream.RecvMsg(msg)
	if named, ok := msg.(interface{ GetSpiffeId() string }); ok && err == nil && s.mark.spiffeID == "" {
		s.mark.spiffeID = cleanID(named.GetSpiffeId())
	}
	return err
}

// newEvent describes an event of the caller in ctx, pid.
func newEvent(ctx context.Context, kind string, pid int32, reason string) *agentv1.WorkloadEvent {
	ev := &agentv1.WorkloadEvent{
		Time: time.Now().UnixNano(), Kind: kind, Pid: max(pid, 0),
		Path: exePath(pid), Reason: clean(reason, maxEventReason),
	}
	if proc, ok := peercred.FromContext(ctx); ok && proc.PID() == pid {
		ev.Uid, ev.Gid = proc.UID(), proc.GID()
	}
	if m, ok := grpc.Method(ctx); ok {
		ev.Method = clean(m, maxEventMethod)
	}
	return ev
}

// exePath is the executable of pid, for the record; "" when it cannot be
// read (the process exited, or is not ours to look at).
func exePath(pid int32) string {
	if pid <= 0 {
		return ""
	}
	p, err := os.Readlink("/proc/" + strconv.Itoa(int(pid)) + "/exe")
	if err != nil {
		return ""
	}
	return clean(p, maxEventPath)
}

// clean makes s valid UTF-8 (a protobuf string must be) and at most n
// bytes.
func clean(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "")
	}
	return s
}

// cleanID is id if it is a SPIFFE ID the server will take, else "": the
// event is still worth reporting without it.
func cleanID(id string) string {
	if id == "" || len(id) > maxEventSPIFFEID {
		return ""
	}
	if _, err := spiffeid.FromString(id); err != nil {
		return ""
	}
	return id
}
