package adminapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
)

// msgConflict tells the operator how to recover from a lost update race.
const msgConflict = "entry changed since it was read: re-read and retry"

// msgInternal is all a caller learns about a failure that is the server's
// problem; the details go to the server log.
const msgInternal = "internal error; details are in the nhid-server log"

// invalidArgument is the answer to a request that breaks a rule; err names
// the field.
func invalidArgument(err error) error {
	return status.Error(codes.InvalidArgument, err.Error())
}

// storeError turns a store failure into the status the caller gets. The
// store's own messages for the sentinels name the record or the argument
// and are safe to show; anything else is logged here and hidden.
func (s *Service) storeError(ctx context.Context, err error) error {
	return status.Error(s.storeCode(ctx, err))
}

func (s *Service) storeCode(ctx context.Context, err error) (codes.Code, string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return codes.NotFound, err.Error()
	case errors.Is(err, store.ErrAlreadyExists):
		return codes.AlreadyExists, err.Error()
	case errors.Is(err, store.ErrConflict):
		return codes.Aborted, msgConflict
	case errors.Is(err, store.ErrInvalidArgument):
		return codes.InvalidArgument, err.Error()
	case errors.Is(err, context.Canceled):
		return codes.Canceled, "request cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, "request deadline exceeded"
	case errors.Is(err, store.ErrClosed):
		return codes.Unavailable, "nhid-server is shutting down; retry once it is back"
	case errors.Is(err, store.ErrUnavailable):
		s.log.WarnContext(ctx, "admin api store unavailable",
			telemetry.Method, methodName(ctx), telemetry.Error, err.Error())
		return codes.Unavailable, "the store is unavailable (etcd has no quorum or cannot be reached); " +
			"retry later: a write that failed this way may or may not have been applied"
	}
	s.log.ErrorContext(ctx, "admin api store failure",
		telemetry.Method, methodName(ctx), telemetry.Error, err.Error())
	return codes.Internal, msgInternal
}

// internal logs err and returns the generic Internal status.
func (s *Service) internal(ctx context.Context, what string, err error) error {
	s.log.ErrorContext(ctx, "admin api failure: "+what,
		telemetry.Method, methodName(ctx), telemetry.Error, err.Error())
	return status.Error(codes.Internal, msgInternal)
}

// change is one admin change as the audit log records it.
type change struct {
	// action follows audit.ActionAdminPrefix: "entry.create", "node.ban".
	action string
	// target names what changed: an entry id, a node's SPIFFE ID, a join
	// token's id (never the token), a grant id. It may be empty when a
	// request failed before it named anything safely.
	target string
	// details hold identifiers and values, never secrets.
	details map[string]any
	// attrs are the log line's, for a successful change.
	attrs []slog.Attr
}

// audit records one admin change, successful (err nil) or failed, as an
// admin.* record whose actor is the caller (callerName), and logs a
// successful one as the "admin change" line. Only identifiers are
// recorded and logged: never a token secret.
func (s *Service) audit(ctx context.Context, ch change, err error) {
	ev := audit.Event{
		Actor: callerName(ctx), Action: audit.ActionAdminPrefix + ch.action, Target: ch.target,
		Outcome: audit.OutcomeSuccess, Details: ch.details,
	}
	if ev.Details == nil {
		ev.Details = make(map[string]any, 1)
	}
	ev.Details["method"] = methodName(ctx)
	if err != nil {
		ev.Outcome, ev.Reason = audit.OutcomeFailure, status.Convert(err).Message()
		if status.Code(err) == codes.PermissionDenied {
			ev.Outcome = audit.OutcomeDenied
		}
	}
	// A change the caller abandoned may still have been applied.
	s.recorder.Record(context.WithoutCancel(ctx), ev)
	if err != nil {
		return
	}
	base := []slog.Attr{slog.String(telemetry.Method, methodName(ctx))}
	if id, ok := svidCaller(ctx); ok {
		base = append(base, slog.String(telemetry.SPIFFEID, id.String()))
	} else if p, ok := peercred.FromContext(ctx); ok {
		base = append(base, slog.Uint64(telemetry.UID, uint64(p.UID())), slog.Int(telemetry.PID, int(p.PID())))
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "admin change", append(base, ch.attrs...)...)
}

func methodName(ctx context.Context) string {
	if m, ok := grpc.Method(ctx); ok {
		return m
	}
	return "unknown"
}
