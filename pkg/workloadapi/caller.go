package workloadapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/selector"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// noIdentityMessage is everything a refused workload learns.
const noIdentityMessage = "no identity issued"

// CallerError reports that the caller of an RPC could not be attested as a
// live local process: it had no kernel credentials, its attestation failed,
// or it exited. Error() carries the reason, for the log; the gRPC status
// (GRPCStatus) is only PermissionDenied "no identity issued", so the reason
// never reaches the caller. Return it from a handler unwrapped, or convert
// it with status.Convert first: gRPC uses the text of a wrapping error.
type CallerError struct {
	// PID is the caller's pid, or 0 if it could not be identified.
	PID int32
	// Err is why the caller was refused.
	Err error
}

// Error describes the refusal with its reason.
func (e *CallerError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("caller refused: %v", e.Err)
	}
	return fmt.Sprintf("caller pid %d refused: %v", e.PID, e.Err)
}

// Unwrap returns the reason.
func (e *CallerError) Unwrap() error { return e.Err }

// GRPCStatus is what the caller sees: PermissionDenied, without the reason.
func (e *CallerError) GRPCStatus() *status.Status {
	return status.New(codes.PermissionDenied, noIdentityMessage)
}

// CallerSelectors identifies the caller of a gRPC request served with
// peercred.TransportCredentials and attests it with a. The process is
// checked to be alive after attestation: its pid was pinned when it
// connected, so if it has exited since, the selectors a read from
// /proc/<pid> may be another process's (a recycled PID), and they are
// discarded.
//
// A caller that cannot be identified, fails attestation or has exited gets
// a *CallerError; a request cancelled meanwhile gets the context's status
// error. Selectors may be empty: a process the attestors know nothing about
// is still a live local process.
func CallerSelectors(ctx context.Context, a Attestor) (selector.Set, *peercred.Process, error) {
	proc, ok := peercred.FromContext(ctx)
	if !ok {
		return selector.Set{}, nil, &CallerError{Err: errors.New("connection carries no peer credentials (not served by a peercred listener)")}
	}
	// A caller already gone is refused without running the attestors,
	// which may be costly (hashing a binary, asking an orchestrator).
	if err := proc.IsAlive(); err != nil {
		return selector.Set{}, nil, &CallerError{PID: proc.PID(), Err: err}
	}
	sels, err := a.Attest(ctx, proc.PID())
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return selector.Set{}, nil, status.FromContextError(ctxErr).Err()
		}
		return selector.Set{}, nil, &CallerError{PID: proc.PID(), Err: fmt.Errorf("attest: %w", err)}
	}
	if err := proc.IsAlive(); err != nil {
		return selector.Set{}, nil, &CallerError{PID: proc.PID(), Err: fmt.Errorf("after attestation: %w", err)}
	}
	return sels, proc, nil
}
