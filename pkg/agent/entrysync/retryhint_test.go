package entrysync

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/store/agentcache"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

func TestWithRetryHint(t *testing.T) {
	busy := status.Error(codes.Unavailable, "server busy")
	tests := []struct {
		name    string
		trailer metadata.MD
		min     time.Duration // 0: no hint expected
	}{
		{"no trailer", nil, 0},
		{"a hint of 3 s", metadata.Pairs(retryAfterKey, "3"), 3 * time.Second},
		{"a huge hint is capped", metadata.Pairs(retryAfterKey, "100000"), maxRetryAfter},
		{"not a number", metadata.Pairs(retryAfterKey, "soon"), 0},
		{"zero", metadata.Pairs(retryAfterKey, "0"), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := withRetryHint(busy, tc.trailer)
			var be *busyError
			if got := errors.As(err, &be); got != (tc.min > 0) {
				t.Fatalf("busy hint found = %v, want %v (err %v)", got, tc.min > 0, err)
			}
			if tc.min == 0 {
				return
			}
			if be.retryAfter < tc.min || be.retryAfter > tc.min+tc.min/5 {
				t.Errorf("retry after %v, want %v plus at most 20%% jitter", be.retryAfter, tc.min)
			}
			if status.Code(err) != codes.Unavailable {
				t.Errorf("the hint hides the status: %v", err)
			}
		})
	}
}

// busySyncer refuses every Sync with a retry-after hint and records when
// it was called.
type busySyncer struct {
	calls chan time.Time
	hint  string
}

func (b *busySyncer) Sync(context.Context, *agentv1.SyncRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[agentv1.SyncResponse], error) {
	b.calls <- time.Now()
	return &busyStream{trailer: metadata.Pairs(retryAfterKey, b.hint)}, nil
}

type busyStream struct {
	grpc.ServerStreamingClient[agentv1.SyncResponse]
	trailer metadata.MD
}

func (s *busyStream) Recv() (*agentv1.SyncResponse, error) {
	return nil, status.Error(codes.Unavailable, "server busy: too many agents are syncing")
}

func (s *busyStream) Trailer() metadata.MD { return s.trailer }

func TestRun_ABusyServersRetryHintIsHonoured(t *testing.T) {
	cache, err := agentcache.Open(filepath.Join(t.TempDir(), agentcache.FileName), agentcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cache.Close() })
	syncer := &busySyncer{calls: make(chan time.Time, 10), hint: "2"}
	c, err := New(Config{TrustDomain: td, Syncer: syncer, Cache: cache, Target: newRecorder()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	next := func() time.Time {
		t.Helper()
		select {
		case at := <-syncer.calls:
			return at
		case <-time.After(waitTimeout):
			t.Fatal("no Sync call within 10s")
		}
		return time.Time{}
	}
	first, second := next(), next()
	// The plain backoff after one failure is about 0.5 s; the hint says 2.
	if gap := second.Sub(first); gap < 2*time.Second {
		t.Errorf("reconnected %v after a refusal asking for 2s", gap)
	}
}
