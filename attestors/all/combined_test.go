package all

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nhid/nhid/attestors/unix"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/jointoken"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

const waitTimeout = 10 * time.Second

// createToken stores a fresh join token and returns its text.
func createToken(t *testing.T, st *bolt.Store) string {
	t.Helper()
	tok, err := jointoken.Generate()
	if err != nil {
		t.Fatal(err)
	}
	err = st.CreateJoinToken(context.Background(), &typesv1.JoinToken{
		Id: tok.ID, SecretHash: tok.SecretHash(),
		CreatedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(time.Hour).Unix(),
	})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	return tok.String()
}

// scripted is a workload attestor that answers from a script. Failing
// attestors cannot be produced on demand from the real ones, and the
// combination logic is what is under test here.
type scripted struct {
	typ  string
	sels []string
	err  error
	// wait, if set, is a rendezvous every scripted attestor must reach
	// before any returns: it only completes if they run concurrently.
	wait *sync.WaitGroup
}

func (s scripted) Type() string { return s.typ }

func (s scripted) Attest(ctx context.Context, _ int32) ([]selector.Selector, error) {
	if s.wait != nil {
		s.wait.Done()
		done := make(chan struct{})
		go func() { s.wait.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := make([]selector.Selector, 0, len(s.sels))
	for _, str := range s.sels {
		out = append(out, selector.Must(str))
	}
	return out, s.err
}

func combinedAttest(t *testing.T, c *Combined) (selector.Set, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return c.Attest(ctx, int32(os.Getpid()))
}

func TestCombine_UnixAloneGivesUnixSelectors(t *testing.T) {
	u, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	direct, err := u.Attest(context.Background(), int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := combinedAttest(t, Combine(nil, u))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if diff := cmp.Diff(selector.NewSet(direct...).Strings(), got.Strings()); diff != "" {
		t.Errorf("selectors (-direct +combined):\n%s", diff)
	}
}

func TestCombine_UnionsAndSurvivesPartialFailure(t *testing.T) {
	boom := errors.New("runtime socket unreachable")
	tests := []struct {
		name      string
		attestors []scripted
		want      []string
		wantErr   []string // substrings; nil means success
		wantLog   string
	}{
		{
			name: "union of all",
			attestors: []scripted{
				{typ: "a", sels: []string{"a:x", "a:y"}},
				{typ: "b", sels: []string{"b:z", "b:z"}},
			},
			want: []string{"a:x", "a:y", "b:z"},
		},
		{
			name: "one failure leaves the others' selectors",
			attestors: []scripted{
				{typ: "a", sels: []string{"a:x"}},
				{typ: "k8s", err: boom},
			},
			want:    []string{"a:x"},
			wantLog: "runtime socket unreachable",
		},
		{
			name: "every failure is an error",
			attestors: []scripted{
				{typ: "a", err: errors.New("first")},
				{typ: "b", err: errors.New("second")},
			},
			wantErr: []string{"every attestor failed", "a: first", "b: second"},
		},
		{
			name: "a selector of another attestor's type is dropped",
			attestors: []scripted{
				{typ: "k8s", sels: []string{"k8s:ns:prod", "unix:uid:0"}},
			},
			want:    []string{"k8s:ns:prod"},
			wantLog: "wrong type",
		},
		{name: "no attestors, no selectors", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			c := Combine(slog.New(slog.NewTextHandler(&logs, nil)), workloads(tt.attestors)...)
			got, err := combinedAttest(t, c)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Attest = %v, want an error", got.Strings())
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("err = %q, want it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if diff := cmp.Diff(tt.want, got.Strings()); diff != "" {
				t.Errorf("selectors (-want +got):\n%s", diff)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("logs = %q, want them to contain %q", logs.String(), tt.wantLog)
			}
		})
	}
}

func workloads(ss []scripted) []attestor.Workload {
	out := make([]attestor.Workload, 0, len(ss))
	for _, s := range ss {
		out = append(out, s)
	}
	return out
}

func TestCombine_RunsAttestorsConcurrently(t *testing.T) {
	var rendezvous sync.WaitGroup
	rendezvous.Add(3)
	c := Combine(nil,
		scripted{typ: "a", sels: []string{"a:1"}, wait: &rendezvous},
		scripted{typ: "b", sels: []string{"b:1"}, wait: &rendezvous},
		scripted{typ: "c", sels: []string{"c:1"}, wait: &rendezvous},
	)
	got, err := combinedAttest(t, c)
	if err != nil {
		t.Fatalf("Attest (attestors run one after another would never meet): %v", err)
	}
	if diff := cmp.Diff([]string{"a:1", "b:1", "c:1"}, got.Strings()); diff != "" {
		t.Errorf("selectors (-want +got):\n%s", diff)
	}
}

func TestCombine_CancelledContextIsAnError(t *testing.T) {
	u, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Combine(nil, u).Attest(ctx, int32(os.Getpid())); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// Combined has the method set of pkg/workloadapi.Attestor, which the
// Workload API handler consumes (spelled out here so this test does not
// depend on the handler package building).
var _ interface {
	Attest(ctx context.Context, pid int32) (selector.Set, error)
} = (*Combined)(nil)
