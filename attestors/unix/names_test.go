package unix

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// countingLookup resolves from names and counts its calls.
type countingLookup struct {
	names map[string]string
	err   error
	calls int
}

func (l *countingLookup) lookup(id string) (string, error) {
	l.calls++
	if l.err != nil {
		return "", l.err
	}
	if n, ok := l.names[id]; ok {
		return n, nil
	}
	return "", errNoName
}

func newTestNameCache(t *testing.T, l *countingLookup) (*nameCache, string, *time.Time) {
	t.Helper()
	db := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(db, []byte("alice:x:1001:1001::/home/alice:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newNameCache(db, l.lookup)
	c.now = func() time.Time { return now }
	return c, db, &now
}

func TestNameCache(t *testing.T) {
	type result struct {
		Name  string
		NoID  bool
		Calls int
	}
	get := func(t *testing.T, c *nameCache, l *countingLookup, id string) result {
		t.Helper()
		name, err := c.get(id)
		if err != nil && !errors.Is(err, errNoName) {
			t.Fatalf("get(%s): %v", id, err)
		}
		return result{Name: name, NoID: errors.Is(err, errNoName), Calls: l.calls}
	}

	t.Run("answers, names and their absence, are reused", func(t *testing.T) {
		l := &countingLookup{names: map[string]string{"1001": "alice"}}
		c, _, _ := newTestNameCache(t, l)
		got := []result{get(t, c, l, "1001"), get(t, c, l, "1001"), get(t, c, l, "7"), get(t, c, l, "7")}
		want := []result{{"alice", false, 1}, {"alice", false, 1}, {"", true, 2}, {"", true, 2}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("a change to the database file drops every answer", func(t *testing.T) {
		l := &countingLookup{names: map[string]string{"1001": "alice"}}
		c, db, now := newTestNameCache(t, l)
		get(t, c, l, "1001")
		// Same size, new content and times: a user renamed in place.
		if err := os.WriteFile(db, []byte("carol:x:1001:1001::/home/alice:/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		future := time.Now().Add(time.Minute)
		if err := os.Chtimes(db, future, future); err != nil {
			t.Fatal(err)
		}
		l.names["1001"] = "carol"
		*now = now.Add(fileRecheck - time.Millisecond)
		if diff := cmp.Diff(result{"alice", false, 1}, get(t, c, l, "1001")); diff != "" {
			t.Errorf("before the file is looked at again (-want +got):\n%s", diff)
		}
		*now = now.Add(time.Millisecond)
		if diff := cmp.Diff(result{"carol", false, 2}, get(t, c, l, "1001")); diff != "" {
			t.Errorf("after the file changed (-want +got):\n%s", diff)
		}
	})
	t.Run("answers expire", func(t *testing.T) {
		l := &countingLookup{names: map[string]string{"1001": "alice"}}
		c, _, now := newTestNameCache(t, l)
		get(t, c, l, "1001")
		*now = now.Add(nameTTL - time.Millisecond)
		if got := get(t, c, l, "1001"); got.Calls != 1 {
			t.Errorf("lookups just before the TTL = %d, want 1", got.Calls)
		}
		*now = now.Add(time.Millisecond)
		if got := get(t, c, l, "1001"); got.Calls != 2 {
			t.Errorf("lookups at the TTL = %d, want 2", got.Calls)
		}
		*now = now.Add(-time.Hour) // a clock stepped back does not extend an answer
		if got := get(t, c, l, "1001"); got.Calls != 3 {
			t.Errorf("lookups after the clock went back = %d, want 3", got.Calls)
		}
	})
	t.Run("failed lookups are not cached", func(t *testing.T) {
		l := &countingLookup{err: errors.New("nss unavailable")}
		c, _, _ := newTestNameCache(t, l)
		for range 2 {
			if _, err := c.get("1001"); err == nil {
				t.Fatal("get succeeded, want the lookup's error")
			}
		}
		l.err = nil
		l.names = map[string]string{"1001": "alice"}
		if diff := cmp.Diff(result{"alice", false, 3}, get(t, c, l, "1001")); diff != "" {
			t.Errorf("after the lookup recovered (-want +got):\n%s", diff)
		}
	})
	t.Run("the cache is bounded", func(t *testing.T) {
		l := &countingLookup{}
		c, _, _ := newTestNameCache(t, l)
		for i := range maxCachedNames + 10 {
			_, _ = c.get(formatID(uint32(i)))
		}
		c.mu.Lock()
		n := len(c.names)
		c.mu.Unlock()
		if n > maxCachedNames {
			t.Errorf("cached names = %d, want at most %d", n, maxCachedNames)
		}
	})
}
