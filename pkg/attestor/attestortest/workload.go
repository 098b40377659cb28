// Package attestortest holds the conformance suites every attestor passes:
// RunWorkload for workload attestors, RunNode (or NodeCase.Run) for the two
// halves of a node attestor. They exercise the contracts of pkg/attestor on
// real inputs, so an implementation is called from its own tests with
//
//	attestortest.RunWorkload(t, a)
package attestortest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/selector"
)

// waitTimeout bounds how long a call may take before the suite calls it
// hung. It is generous on purpose: the suites check behaviour, not speed.
const waitTimeout = 10 * time.Second

// concurrentCalls is how many goroutines attest at once in the race checks.
const concurrentCalls = 50

// RunWorkload checks that a behaves as attestor.Workload requires.
func RunWorkload(t *testing.T, a attestor.Workload) {
	t.Helper()
	t.Run("TypeIsAValidSelectorType", func(t *testing.T) { checkWorkloadType(t, a) })
	t.Run("AttestsTheTestProcess", func(t *testing.T) {
		attestSelf(t, a)
	})
	t.Run("MissingPIDIsHandled", func(t *testing.T) { checkMissingPIDs(t, a) })
	t.Run("CancelledContextReturns", func(t *testing.T) { checkWorkloadCancel(t, a) })
	t.Run("ConcurrentCallsAgree", func(t *testing.T) { checkWorkloadConcurrency(t, a) })
}

func checkWorkloadType(t *testing.T, a attestor.Workload) {
	typ := a.Type()
	if typ == "" {
		t.Fatal("Type() is empty")
	}
	if _, err := selector.New(typ, "conformance"); err != nil {
		t.Fatalf("Type() %q is not a valid selector type: %v", typ, err)
	}
}

// attestSelf attests the test process, checks every selector, and returns
// their sorted string forms.
func attestSelf(t *testing.T, a attestor.Workload) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sels, err := a.Attest(ctx, int32(os.Getpid()))
	if err != nil {
		t.Fatalf("Attest(own pid %d): %v", os.Getpid(), err)
	}
	checkSelectors(t, a.Type(), sels)
	return selector.NewSet(sels...).Strings()
}

// checkSelectors requires every selector to be valid and of type typ.
func checkSelectors(t *testing.T, typ string, sels []selector.Selector) {
	t.Helper()
	for i, s := range sels {
		if s.Type() != typ {
			t.Errorf("selectors[%d] = %q: type %q, want %q", i, s, s.Type(), typ)
		}
		if _, err := selector.New(s.Type(), s.Value()); err != nil {
			t.Errorf("selectors[%d] = %q is invalid: %v", i, s, err)
		}
	}
}

// missingPIDs are pids no process can have: pid_max itself (pids stay
// below it) and values that are never pids at all.
func missingPIDs(t *testing.T) []int32 {
	t.Helper()
	pids := []int32{0, -1}
	raw, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Logf("read pid_max: %v; checking only pids 0 and -1", err)
		return pids
	}
	max, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 32)
	if err != nil {
		t.Fatalf("parse pid_max %q: %v", raw, err)
	}
	return append(pids, int32(max))
}

func checkMissingPIDs(t *testing.T, a attestor.Workload) {
	for _, pid := range missingPIDs(t) {
		t.Run(fmt.Sprintf("pid_%d", pid), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			sels, err := a.Attest(ctx, pid)
			if err == nil && len(sels) != 0 {
				t.Errorf("Attest(missing pid %d) = %v, want an error or no selectors", pid, selector.NewSet(sels...).Strings())
			}
		})
	}
}

func checkWorkloadCancel(t *testing.T, a attestor.Workload) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan []selector.Selector, 1)
	go func() {
		// Either answer is acceptable: an attestor with nothing slow to do
		// may finish regardless. It must not hang or return bad selectors.
		sels, err := a.Attest(ctx, int32(os.Getpid()))
		if err != nil {
			sels = nil
		}
		done <- sels
	}()
	select {
	case sels := <-done:
		checkSelectors(t, a.Type(), sels)
	case <-time.After(waitTimeout):
		t.Fatal("Attest with a cancelled context did not return")
	}
}

func checkWorkloadConcurrency(t *testing.T, a attestor.Workload) {
	want := attestSelf(t, a)
	results := make([][]string, concurrentCalls)
	errs := make([]error, concurrentCalls)
	var wg sync.WaitGroup
	for i := range concurrentCalls {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			sels, err := a.Attest(ctx, int32(os.Getpid()))
			results[i], errs[i] = selector.NewSet(sels...).Strings(), err
		})
	}
	wg.Wait()
	for i := range concurrentCalls {
		if errs[i] != nil {
			t.Errorf("concurrent call %d: %v", i, errs[i])
			continue
		}
		if diff := cmp.Diff(want, results[i]); diff != "" {
			t.Errorf("concurrent call %d disagrees with a sequential one (-want +got):\n%s", i, diff)
		}
	}
}
