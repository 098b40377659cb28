package bolt_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	"github.com/nhid/nhid/pkg/store/storetest"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openStore opens a store in a fresh temp dir and closes it with the test.
func openStore(tb testing.TB, opts bolt.Options) (*bolt.Store, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "nhid.db")
	s, err := bolt.Open(path, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s, path
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openStore(t, bolt.Options{})
		return s
	})
}

func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, func(b *testing.B) store.Store {
		s, _ := openStore(b, bolt.Options{})
		return s
	})
}

func TestOpen_CreatesTheFileWithMode0600(t *testing.T) {
	_, path := openStore(t, bolt.Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("file mode %v, want 0600", got)
	}
}

func TestOpen_SecondOpenOfALockedFileFailsClearly(t *testing.T) {
	_, path := openStore(t, bolt.Options{})
	// Allow minutes before a hang would be reported: the check is that the
	// call gives up, not how fast.
	done := make(chan error, 1)
	go func() {
		s, err := bolt.Open(path, bolt.Options{OpenTimeout: 50 * time.Millisecond})
		if err == nil {
			_ = s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("second Open of a locked file succeeded")
		}
		if !strings.Contains(err.Error(), "another nhid-server may be using the data dir") || !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file and the likely cause", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("second Open of a locked file did not give up")
	}
}

func TestOpen_MissingParentDirectoryIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "nhid.db")
	s, err := bolt.Open(path, bolt.Options{})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open in a missing directory succeeded")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the path", err)
	}
}

func TestOpen_RejectsInvalidOptions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		opts bolt.Options
		want string
	}{
		{"empty path", "", bolt.Options{}, "path is empty"},
		{"negative timeout", filepath.Join(dir, "a.db"), bolt.Options{OpenTimeout: -time.Second}, "open timeout"},
		{"negative watch buffer", filepath.Join(dir, "b.db"), bolt.Options{WatchBuffer: -1}, "watch buffer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := bolt.Open(tc.path, tc.opts)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestOpen_ClosedStoreRefusesCalls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nhid.db")
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ch, err := s.Watch(t.Context())
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, ok := <-ch; ok {
		t.Error("watch channel delivered an event after Close instead of closing")
	}
	if _, err := s.Revision(t.Context()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Revision after Close: %v, want ErrClosed", err)
	}
	if _, _, err := s.CreateEntries(t.Context(), []*typesv1.Entry{{SpiffeId: "spiffe://example.org/w"}}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("CreateEntries after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Watch(t.Context()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
