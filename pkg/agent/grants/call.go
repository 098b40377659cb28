package grants

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/nhid/nhid/pkg/workloadapi"
)

// Method names, as used in metric labels and logs.
const (
	methodRequest = "Request"
	methodRelease = "Release"
	methodList    = "List"
)

// Messages of the PermissionDenied refusals the Grant API decides itself,
// exported so that the agent's event reporter tells them from the
// server's answers it relays (which the server has already recorded).
const (
	// NoIdentityMessage is what a caller entitled to nothing learns, as on
	// the Workload API.
	NoIdentityMessage = "no identity issued"
	// NotHeldSuffix ends the message to a caller that named a spiffe_id it
	// does not hold.
	NotHeldSuffix = " is not one of the caller's identities"
)

var (
	errNoIdentity = &workloadapi.StatusError{Code: codes.PermissionDenied, Msg: NoIdentityMessage}
	errStopping   = &workloadapi.StatusError{Code: codes.Unavailable, Msg: "the agent is shutting down; retry later"}
)

func invalidArgument(format string, args ...any) error {
	return &workloadapi.StatusError{Code: codes.InvalidArgument, Msg: fmt.Sprintf(format, args...)}
}

// upstreamError is nhid-server, or the way to it, failing a call.
type upstreamError struct{ err error }

func (e *upstreamError) Error() string { return "nhid-server: " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

// call is one Grant API call in progress. It carries the attested caller
// and turns the call's outcome into a status, a metric and a log line, in
// this one place.
type call struct {
	h      *Handler
	ctx    context.Context // ends with the caller or when the handler stops
	peer   context.Context // the caller's own context
	cancel context.CancelFunc
	method string
	start  time.Time
	log    *slog.Logger

	identities []workloadapi.Identity
}

func (h *Handler) begin(ctx context.Context, method string) *call {
	callCtx, cancel := context.WithCancel(ctx)
	stopCall := context.AfterFunc(h.stopping, cancel)
	return &call{
		h:      h,
		ctx:    callCtx,
		peer:   ctx,
		cancel: func() { stopCall(); cancel() },
		method: method,
		start:  time.Now(),
		log:    telemetry.Logger(ctx, h.log).With(telemetry.Method, method),
	}
}

// attest identifies the caller and finds the identities it holds; a
// caller holding none is refused.
func (c *call) attest() error {
	if c.h.stopping.Err() != nil {
		return errStopping
	}
	sels, proc, err := workloadapi.CallerSelectors(c.ctx, c.h.attestor)
	var ce *workloadapi.CallerError
	if errors.As(err, &ce) && ce.PID != 0 {
		c.log = c.log.With(telemetry.PID, ce.PID)
	}
	if err != nil {
		return err
	}
	c.log = c.log.With(telemetry.PID, proc.PID(), telemetry.UID, proc.UID(), telemetry.GID, proc.GID())
	if u := c.h.identities.Current(sels); u != nil {
		c.identities = u.Identities
	}
	if len(c.identities) == 0 {
		c.log = c.log.With(telemetry.Selectors, sels.Strings())
		return errNoIdentity
	}
	return nil
}

// end turns the outcome into the status the caller gets, counts and logs
// it, and releases the call's context.
func (c *call) end(err error) error {
	defer c.cancel()
	st := c.status(err)
	c.h.metrics.requests.WithLabelValues(c.method, st.Code().String()).Inc()
	c.logEnd(st, err)
	if err == nil {
		return nil
	}
	return st.Err()
}

// status maps every error of the Grant API to what the workload sees.
func (c *call) status(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	if peerErr := c.peer.Err(); peerErr != nil {
		return status.FromContextError(peerErr)
	}
	if c.h.stopping.Err() != nil {
		return errStopping.GRPCStatus()
	}
	var (
		ae *workloadapi.StatusError
		ue *upstreamError
		ce *workloadapi.CallerError
	)
	switch {
	case errors.As(err, &ae):
		return ae.GRPCStatus()
	case errors.As(err, &ce):
		return ce.GRPCStatus()
	case errors.As(err, &ue):
		return upstreamStatus(status.Convert(ue.err))
	}
	if st, ok := status.FromError(err); ok && (st.Code() == codes.Canceled || st.Code() == codes.DeadlineExceeded) {
		return st
	}
	return status.New(codes.Internal, "internal error")
}

// upstreamStatus decides what a workload learns of a server error. The
// server's answers about the request itself pass through with their
// message; failures to reach the server become Unavailable, which clients
// retry; anything else is the server's business, not the workload's.
func upstreamStatus(st *status.Status) *status.Status {
	switch st.Code() {
	case codes.InvalidArgument, codes.PermissionDenied, codes.NotFound, codes.FailedPrecondition,
		codes.AlreadyExists, codes.ResourceExhausted, codes.OutOfRange, codes.Aborted:
		return status.New(st.Code(), st.Message())
	case codes.Unavailable, codes.Unauthenticated, codes.DeadlineExceeded, codes.Canceled:
		// Canceled with the caller still there: the agent replaced its
		// connection (SVID renewal) under the call.
		return status.New(codes.Unavailable, "nhid-server cannot be reached; retry later")
	case codes.Unimplemented:
		return status.New(codes.Unimplemented, "nhid-server does not serve grants")
	}
	return status.New(codes.Internal, "nhid-server failed to handle the request")
}

func (c *call) logEnd(st *status.Status, err error) {
	code := st.Code()
	d := time.Since(c.start)
	var ce *workloadapi.CallerError
	switch {
	case err == nil:
		c.log.Debug("grant API call finished", telemetry.Duration, d)
	case code == codes.Canceled || code == codes.DeadlineExceeded:
		c.log.Info("grant API call ended by the caller", telemetry.Code, code.String(), telemetry.Duration, d)
	case errors.As(err, &ce):
		c.log.Warn("grant API caller refused", telemetry.Reason, ce.Err)
	case errors.Is(err, errNoIdentity):
		c.log.Info("grant API caller holds no identity")
	case code == codes.Internal:
		c.log.Error("grant API call failed", telemetry.Error, err)
	case code == codes.Unavailable:
		c.log.Warn("grant API call failed", telemetry.Code, code.String(), telemetry.Error, err)
	default:
		c.log.Info("grant API call refused", telemetry.Code, code.String(), telemetry.Reason, st.Message())
	}
}
