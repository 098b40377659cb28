package entrysync

import (
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/grpc/metadata"
)

// retryAfterKey is the trailer a busy server sets on the Sync stream it
// refuses: the seconds to wait before reconnecting (agentapi.RetryAfterKey).
const retryAfterKey = "retry-after"

// maxRetryAfter bounds what a server can make an agent wait.
const maxRetryAfter = 5 * time.Minute

// busyError is a refusal that came with a retry-after hint.
type busyError struct {
	err        error
	retryAfter time.Duration
}

func (e *busyError) Error() string { return e.err.Error() }
func (e *busyError) Unwrap() error { return e.err }

// withRetryHint wraps err in a busyError when the trailer asks for a
// pause; the pause gets up to 20% jitter on top, so that agents refused
// together do not return together.
func withRetryHint(err error, trailer metadata.MD) error {
	vals := trailer.Get(retryAfterKey)
	if len(vals) == 0 {
		return err
	}
	secs, perr := strconv.Atoi(vals[0])
	if perr != nil || secs <= 0 {
		return err
	}
	d := min(time.Duration(secs)*time.Second, maxRetryAfter)
	d += time.Duration(rand.Int64N(int64(d)/5 + 1))
	return &busyError{err: err, retryAfter: d}
}
