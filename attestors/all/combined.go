package all

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Combined runs several workload attestors as one. It satisfies
// pkg/workloadapi.Attestor and is safe for concurrent use.
type Combined struct {
	log       *slog.Logger
	attestors []attestor.Workload
}

// Combine returns an attestor that runs every one of as concurrently and
// unions their selectors. log defaults to slog.Default().
func Combine(log *slog.Logger, as ...attestor.Workload) *Combined {
	if log == nil {
		log = slog.Default()
	}
	return &Combined{log: log, attestors: append([]attestor.Workload(nil), as...)}
}

type attestResult struct {
	sels []selector.Selector
	err  error
}

// Attest runs every attestor on pid at once and returns the union of their
// selectors. One attestor's failure is logged and leaves the others'
// selectors standing, since each selector is true on its own; only when
// every attestor fails is the result an error. A selector whose type is not
// its attestor's is dropped, so no attestor can speak for another.
func (c *Combined) Attest(ctx context.Context, pid int32) (selector.Set, error) {
	results := make([]attestResult, len(c.attestors))
	var wg sync.WaitGroup
	for i, a := range c.attestors {
		wg.Go(func() {
			sels, err := a.Attest(ctx, pid)
			results[i] = attestResult{sels: sels, err: err}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return selector.Set{}, fmt.Errorf("attest pid %d: %w", pid, err)
	}

	var (
		union []selector.Selector
		errs  []error
	)
	for i, a := range c.attestors {
		r := results[i]
		if r.err != nil {
			c.log.Warn("workload attestor failed", telemetry.Attestor, a.Type(), telemetry.PID, pid, telemetry.Error, r.err)
			errs = append(errs, fmt.Errorf("%s: %w", a.Type(), r.err))
			continue
		}
		union = append(union, c.ownSelectors(a.Type(), pid, r.sels)...)
	}
	if len(c.attestors) > 0 && len(errs) == len(c.attestors) {
		return selector.Set{}, fmt.Errorf("attest pid %d: every attestor failed: %w", pid, errors.Join(errs...))
	}
	return selector.NewSet(union...), nil
}

func (c *Combined) ownSelectors(typ string, pid int32, sels []selector.Selector) []selector.Selector {
	out := sels[:0:0]
	for _, s := range sels {
		if s.Type() != typ || s.IsZero() {
			c.log.Error("dropping selector of the wrong type", telemetry.Attestor, typ, telemetry.PID, pid, "selector", s.String())
			continue
		}
		out = append(out, s)
	}
	return out
}
