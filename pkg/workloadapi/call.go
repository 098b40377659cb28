package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Method names, as used in metric labels and logs.
const (
	methodFetchX509SVID    = "FetchX509SVID"
	methodFetchX509Bundles = "FetchX509Bundles"
	methodFetchJWTSVID     = "FetchJWTSVID"
	methodFetchJWTBundles  = "FetchJWTBundles"
	methodValidateJWTSVID  = "ValidateJWTSVID"
)

// errNoIdentity answers a caller entitled to nothing.
var errNoIdentity = status.Error(codes.PermissionDenied, noIdentityMessage)

// StatusError is an answer decided on the agent, by the Workload API or by
// another API served on its socket (the Grant API): the caller sees Code
// and Msg, which say what to do next; Cause goes to the log only, so the
// caller learns "try again later", not how our cache or the server failed.
type StatusError struct {
	Code  codes.Code
	Msg   string
	Cause error
}

func (e *StatusError) Error() string {
	if e.Cause == nil {
		return e.Msg
	}
	return fmt.Sprintf("%s: %v", e.Msg, e.Cause)
}

func (e *StatusError) Unwrap() error { return e.Cause }

func (e *StatusError) GRPCStatus() *status.Status { return status.New(e.Code, e.Msg) }

// call is one RPC in progress: it carries the caller, once attested, and
// turns the RPC's outcome into a status, a metric and a log line, in this
// one place.
type call struct {
	h         *Handler
	ctx       context.Context
	method    string
	stream    bool
	start     time.Time
	log       *slog.Logger
	responded bool

	sels selector.Set
	proc *peercred.Process
	// wantID is the SPIFFE ID the caller named, if any (refused.go).
	wantID string
}

func (h *Handler) begin(ctx context.Context, method string, stream bool) *call {
	if stream {
		h.metrics.streams.WithLabelValues(method).Inc()
	}
	// A logging interceptor may have put a request logger, already naming
	// the method, in the context; otherwise ours gets the method.
	log := telemetry.Logger(ctx, h.log)
	if log == h.log {
		log = log.With(telemetry.Method, method)
	}
	return &call{
		h:      h,
		ctx:    ctx,
		method: method,
		stream: stream,
		start:  time.Now(),
		log:    log,
	}
}

// attest identifies and attests the caller.
func (c *call) attest() error {
	sels, proc, err := CallerSelectors(c.ctx, c.h.attestor)
	var ce *CallerError
	if errors.As(err, &ce) && ce.PID != 0 {
		c.log = c.log.With(telemetry.PID, ce.PID)
	}
	if err != nil {
		return err
	}
	c.sels, c.proc = sels, proc
	c.log = c.log.With(telemetry.PID, proc.PID(), telemetry.UID, proc.UID(), telemetry.GID, proc.GID())
	return nil
}

// sent records that a response message went out.
func (c *call) sent() {
	if !c.responded {
		c.responded = true
		c.h.metrics.firstResponse.WithLabelValues(c.method).Observe(time.Since(c.start).Seconds())
	}
}

// end turns the RPC's outcome into the status the caller gets, counts it
// and logs it.
func (c *call) end(err error) error {
	if c.stream {
		c.h.metrics.streams.WithLabelValues(c.method).Dec()
	}
	st := c.status(err)
	c.h.metrics.requests.WithLabelValues(c.method, st.Code().String()).Inc()
	c.logEnd(st, err)
	c.reportRefusal(err)
	if err == nil {
		return nil
	}
	return st.Err()
}

func (c *call) status(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	// However a stream failed after its client left, the client left.
	if ctxErr := c.ctx.Err(); ctxErr != nil {
		return status.FromContextError(ctxErr)
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		return gs.GRPCStatus()
	}
	return status.New(codes.Internal, "internal error")
}

func (c *call) logEnd(st *status.Status, err error) {
	code := st.Code()
	var ce *CallerError
	switch {
	case err == nil, code == codes.Canceled, code == codes.DeadlineExceeded:
		c.log.Debug("workload API request finished", telemetry.Code, code.String(), telemetry.Duration, time.Since(c.start))
	case errors.As(err, &ce):
		c.log.Warn("workload API caller refused", telemetry.Reason, ce.Err)
	case errors.Is(err, errNoIdentity):
		// Info, not Warn: a workload that starts before its entry exists
		// retries, and the line tells the operator which selectors to
		// register.
		c.log.Info("no identity issued", telemetry.Selectors, c.sels.Strings())
	case code == codes.InvalidArgument:
		c.log.Debug("invalid workload API request", telemetry.Reason, st.Message())
	case code == codes.Internal:
		c.log.Error("workload API request failed", telemetry.Error, err)
	default:
		c.log.Warn("workload API request failed", telemetry.Code, code.String(), telemetry.Error, err)
	}
}
