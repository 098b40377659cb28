package bolt_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func entry(spiffeID string, selectors ...string) *typesv1.Entry {
	return &typesv1.Entry{SpiffeId: spiffeID, ParentId: "spiffe://example.org/agent", Selectors: selectors}
}

func TestWatch_SlowWatcherIsDroppedWithoutBlockingWriters(t *testing.T) {
	s, _ := openStore(t, bolt.Options{WatchBuffer: 2})
	slow, err := s.Watch(t.Context())
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	var batch []*typesv1.Entry
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		batch = append(batch, entry("spiffe://example.org/"+id))
	}
	// Five events into a buffer of two: the writer must not wait for the
	// reader, so this returns although nobody reads.
	if _, _, err := s.CreateEntries(t.Context(), batch); err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	got := 0
	timeout := time.After(10 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-slow:
			if open {
				got++
			}
		case <-timeout:
			t.Fatal("the slow watcher's channel was not closed")
		}
	}
	// Once dropped, a watcher must re-read the state, so what it got before
	// the close is only ever a prefix, never more than its limit.
	if got > 2 {
		t.Errorf("the slow watcher received %d events before being dropped, more than its limit of 2", got)
	}
	// A new watcher works normally.
	fresh, err := s.Watch(t.Context())
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, _, err := s.CreateEntries(t.Context(), []*typesv1.Entry{entry("spiffe://example.org/f")}); err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	select {
	case ev, ok := <-fresh:
		if !ok || ev.Entry.GetSpiffeId() != "spiffe://example.org/f" {
			t.Errorf("fresh watcher got %v (open %v)", ev, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fresh watcher got no event")
	}
}

func TestUpdateEntry_KeepsCreatedAt(t *testing.T) {
	s, _ := openStore(t, bolt.Options{})
	created, _, err := s.CreateEntries(t.Context(), []*typesv1.Entry{{SpiffeId: "spiffe://example.org/w", CreatedAt: 1000}})
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	upd := proto.Clone(created[0]).(*typesv1.Entry)
	upd.CreatedAt = 5
	got, err := s.UpdateEntry(t.Context(), upd)
	if err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	if got.CreatedAt != 1000 {
		t.Errorf("CreatedAt = %d after update, want the original 1000", got.CreatedAt)
	}
}

func TestEntryChangesSince_RecreatedIDIsReportedAsChangedOnly(t *testing.T) {
	s, _ := openStore(t, bolt.Options{})
	ctx := t.Context()
	e := entry("spiffe://example.org/w")
	e.Id = "fixed"
	if _, _, err := s.CreateEntries(ctx, []*typesv1.Entry{e}); err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	since, _ := s.Revision(ctx)
	for range 2 {
		if _, err := s.DeleteEntry(ctx, "fixed"); err != nil {
			t.Fatalf("DeleteEntry: %v", err)
		}
		if _, errs, err := s.CreateEntries(ctx, []*typesv1.Entry{e}); err != nil || errs[0] != nil {
			t.Fatalf("CreateEntries: %v %v", errs, err)
		}
	}
	changed, deleted, _, err := s.EntryChangesSince(ctx, since)
	if err != nil {
		t.Fatalf("EntryChangesSince: %v", err)
	}
	// A consumer applying deletes after upserts must not lose the entry.
	if len(changed) != 1 || changed[0].Id != "fixed" || len(deleted) != 0 {
		t.Errorf("changed %d entries, deleted %v; want only the live entry %q as changed", len(changed), deleted, "fixed")
	}
	if _, err := s.DeleteEntry(ctx, "fixed"); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	_, deleted, _, err = s.EntryChangesSince(ctx, since)
	if err != nil {
		t.Fatalf("EntryChangesSince: %v", err)
	}
	if diff := cmp.Diff([]string{"fixed"}, deleted); diff != "" {
		t.Errorf("an id deleted three times (-want +got):\n%s", diff)
	}
}

func TestRecordIssued_DuplicateIDWritesNothing(t *testing.T) {
	s, _ := openStore(t, bolt.Options{})
	ctx := t.Context()
	if err := s.RecordIssued(ctx, []*typesv1.IssuedSVID{{Id: "a", ExpiresAt: 10}}); err != nil {
		t.Fatalf("RecordIssued: %v", err)
	}
	err := s.RecordIssued(ctx, []*typesv1.IssuedSVID{{Id: "b", ExpiresAt: 10}, {Id: "a", ExpiresAt: 20}})
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("RecordIssued with a recorded id: %v, want ErrAlreadyExists", err)
	}
	if _, err := s.GetIssued(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("row b of the failed call: %v, want ErrNotFound", err)
	}
	if got, err := s.GetIssued(ctx, "a"); err != nil || got.ExpiresAt != 10 {
		t.Errorf("row a = %v, %v; want the original", got, err)
	}
}

func TestInputsAreValidatedWithTheFieldNamed(t *testing.T) {
	s, _ := openStore(t, bolt.Options{})
	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"token without id", func() error {
			return s.CreateJoinToken(ctx, &typesv1.JoinToken{SecretHash: []byte{1}, ExpiresAt: 1})
		}, "id is empty"},
		{"token without secret hash", func() error {
			return s.CreateJoinToken(ctx, &typesv1.JoinToken{Id: "t", ExpiresAt: 1})
		}, "secret_hash"},
		{"token without expiry", func() error {
			return s.CreateJoinToken(ctx, &typesv1.JoinToken{Id: "t", SecretHash: []byte{1}})
		}, "expires_at"},
		{"ledger row without id", func() error {
			return s.RecordIssued(ctx, []*typesv1.IssuedSVID{{ExpiresAt: 1}})
		}, "rows[0].id"},
		{"nil entry", func() error {
			_, _, err := s.CreateEntries(ctx, []*typesv1.Entry{entry("spiffe://example.org/a"), nil})
			return err
		}, "entries[1]"},
		{"node without SPIFFE ID", func() error { _, err := s.CreateNode(ctx, &typesv1.Node{}); return err }, "spiffe_id"},
		{"bundle without trust domain", func() error {
			_, err := s.UpdateBundle(ctx, "", func(*typesv1.Bundle) error { return nil })
			return err
		}, "trust_domain"},
		{"negative page size", func() error {
			_, _, err := s.ListEntries(ctx, store.ListEntriesRequest{PageSize: -1})
			return err
		}, "page_size"},
		{"malformed page token", func() error {
			_, _, err := s.ListEntries(ctx, store.ListEntriesRequest{PageToken: "!"})
			return err
		}, "page_token"},
		{"negative revision", func() error {
			_, _, _, err := s.EntryChangesSince(ctx, -1)
			return err
		}, "revision"},
		{"negative node page size", func() error {
			_, _, err := s.ListNodes(ctx, -1, "")
			return err
		}, "page_size"},
		{"malformed node page token", func() error {
			_, _, err := s.ListNodes(ctx, 1, "!")
			return err
		}, "page_token"},
		{"negative prune revision", func() error { return s.PruneTombstones(ctx, -1) }, "revision"},
		{"token use without used_by", func() error {
			_, err := s.UseJoinToken(ctx, "t", []byte{1}, "", time.Unix(1, 0))
			return err
		}, "used_by"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
			if !errors.Is(err, store.ErrInvalidArgument) {
				t.Errorf("error %v does not wrap ErrInvalidArgument", err)
			}
		})
	}
	if n, _ := s.CountEntries(ctx); n != 0 {
		t.Errorf("a rejected batch stored %d entries", n)
	}
}

func TestOpen_RejectsAnUnknownSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nhid.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatalf("bbolt.Open: %v", err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("schema"), []byte{0, 0, 0, 0, 0, 0, 0, 99})
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("write future schema: %v", err)
	}
	s, err := bolt.Open(path, bolt.Options{})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open accepted schema version 99")
	}
	if !strings.Contains(err.Error(), "schema version 99") {
		t.Errorf("error %q does not name the version", err)
	}
}

func TestOpen_WarnsAboutAFileOthersCanRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nhid.db")
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatalf("Chmod: %v", err)
	}
	var logs bytes.Buffer
	s, err = bolt.Open(path, bolt.Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if !strings.Contains(logs.String(), "chmod 600") || !strings.Contains(logs.String(), path) {
		t.Errorf("no warning naming the file in logs:\n%s", logs.String())
	}
}

func TestCreateEntries_ManyLongSelectorsStayWithinKeyLimits(t *testing.T) {
	s, _ := openStore(t, bolt.Options{})
	var sels []string
	for i := range 64 {
		sels = append(sels, fmt.Sprintf("k8s:label:%03d=%s", i, strings.Repeat("v", 1000)))
	}
	e := entry("spiffe://example.org/"+strings.Repeat("p", 2000), sels...)
	_, errs, err := s.CreateEntries(t.Context(), []*typesv1.Entry{e, entry(e.SpiffeId, reversed(sels)...)})
	if err != nil || errs[0] != nil {
		t.Fatalf("CreateEntries of an entry with 64 KiB of selectors: %v, %v", errs, err)
	}
	if !errors.Is(errs[1], store.ErrAlreadyExists) {
		t.Errorf("its duplicate: %v, want ErrAlreadyExists", errs[1])
	}
	got, _, err := s.ListEntries(t.Context(), store.ListEntriesRequest{Selectors: sels[10:12]})
	if err != nil || len(got) != 1 {
		t.Errorf("ListEntries by two of its selectors = %d entries, %v; want 1", len(got), err)
	}
}

func reversed(ss []string) []string {
	out := slices.Clone(ss)
	slices.Reverse(out)
	return out
}
