package agentcache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func openCache(t *testing.T, path string) *Cache {
	t.Helper()
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func entry(id string, rev int64) *typesv1.Entry {
	return &typesv1.Entry{
		Id:        id,
		SpiffeId:  "spiffe://example.org/" + id,
		ParentId:  "spiffe://example.org/nhid/agent/join_token/abc",
		Selectors: []string{"unix:uid:1000"},
		Purpose:   "test " + id,
		Owner:     "ops@example.org",
		Revision:  rev,
	}
}

func svid(id string) SVID {
	return SVID{
		EntryID:     id,
		CertChain:   [][]byte{[]byte("leaf-" + id), []byte("intermediate")},
		PrivateKey:  []byte("key-" + id),
		EntryDigest: []byte("digest-" + id),
	}
}

func load(t *testing.T, c *Cache) *State {
	t.Helper()
	st, err := c.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return st
}

func TestOpen_ReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	c := openCache(t, path)
	bundle := &typesv1.Bundle{
		TrustDomain:     "example.org",
		X509Authorities: []*typesv1.X509Authority{{Asn1: []byte("ca")}},
		SequenceNumber:  3,
	}
	if err := c.Apply(Change{Upserts: []*typesv1.Entry{entry("b", 2), entry("a", 1)}, Revision: 7, Bundle: bundle}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if n, err := c.PutSVIDs([]SVID{svid("a"), svid("b")}); err != nil || n != 2 {
		t.Fatalf("PutSVIDs = %d, %v; want 2, nil", n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	got := load(t, openCache(t, path))
	want := &State{
		Revision: 7,
		Bundle:   bundle,
		Entries:  []*typesv1.Entry{entry("a", 1), entry("b", 2)},
		SVIDs:    []SVID{svid("a"), svid("b")},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("state after reopen (-want +got):\n%s", diff)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("cache file mode = %v, want 0600", perm)
	}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name        string
		change      Change
		wantRev     int64
		wantEntries []string
		wantSVIDs   []string
	}{
		{
			name:        "upserts add and replace entries",
			change:      Change{Upserts: []*typesv1.Entry{entry("a", 9), entry("d", 9)}, Revision: 9},
			wantRev:     9,
			wantEntries: []string{"a@9", "b@1", "c@1", "d@9"},
			wantSVIDs:   []string{"a", "b", "c"},
		},
		{
			name:        "deletes remove entries and their svids",
			change:      Change{DeletedIDs: []string{"b", "unknown"}, Revision: 9},
			wantRev:     9,
			wantEntries: []string{"a@1", "c@1"},
			wantSVIDs:   []string{"a", "c"},
		},
		{
			name:        "reset keeps svids of entries sent again only",
			change:      Change{Reset: true, Upserts: []*typesv1.Entry{entry("c", 9), entry("e", 9)}, Revision: 9},
			wantRev:     9,
			wantEntries: []string{"c@9", "e@9"},
			wantSVIDs:   []string{"c"},
		},
		{
			name:        "revision 0 keeps the stored revision",
			change:      Change{Upserts: []*typesv1.Entry{entry("e", 9)}},
			wantRev:     5,
			wantEntries: []string{"a@1", "b@1", "c@1", "e@9"},
			wantSVIDs:   []string{"a", "b", "c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, filepath.Join(t.TempDir(), FileName))
			seed := Change{Upserts: []*typesv1.Entry{entry("a", 1), entry("b", 1), entry("c", 1)}, Revision: 5}
			if err := c.Apply(seed); err != nil {
				t.Fatal(err)
			}
			if _, err := c.PutSVIDs([]SVID{svid("a"), svid("b"), svid("c")}); err != nil {
				t.Fatal(err)
			}
			if err := c.Apply(tt.change); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			st := load(t, c)
			if st.Revision != tt.wantRev {
				t.Errorf("revision = %d, want %d", st.Revision, tt.wantRev)
			}
			var gotEntries, gotSVIDs []string
			for _, e := range st.Entries {
				gotEntries = append(gotEntries, fmt.Sprintf("%s@%d", e.GetId(), e.GetRevision()))
			}
			for _, s := range st.SVIDs {
				gotSVIDs = append(gotSVIDs, s.EntryID)
			}
			if diff := cmp.Diff(tt.wantEntries, gotEntries); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantSVIDs, gotSVIDs); diff != "" {
				t.Errorf("svids (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPutSVIDs_SkipsEntriesNoLongerCached(t *testing.T) {
	c := openCache(t, filepath.Join(t.TempDir(), FileName))
	if err := c.Apply(Change{Upserts: []*typesv1.Entry{entry("a", 1)}}); err != nil {
		t.Fatal(err)
	}
	n, err := c.PutSVIDs([]SVID{svid("a"), svid("gone")})
	if err != nil || n != 1 {
		t.Fatalf("PutSVIDs = %d, %v; want 1, nil", n, err)
	}
	if err := c.DeleteSVIDs([]string{"a"}); err != nil {
		t.Fatalf("DeleteSVIDs: %v", err)
	}
	if st := load(t, c); len(st.SVIDs) != 0 {
		t.Errorf("svids after delete = %d, want 0", len(st.SVIDs))
	}
}

func TestValidation_NamesTheFieldAndChangesNothing(t *testing.T) {
	tests := []struct {
		name    string
		run     func(c *Cache) error
		wantErr string
	}{
		{"entry without id", func(c *Cache) error {
			return c.Apply(Change{Upserts: []*typesv1.Entry{entry("x", 1), {SpiffeId: "spiffe://example.org/y"}}})
		}, "upserts[1].id"},
		{"empty deleted id", func(c *Cache) error { return c.Apply(Change{DeletedIDs: []string{""}}) }, "deleted_ids[0]"},
		{"negative revision", func(c *Cache) error { return c.Apply(Change{Revision: -1}) }, "revision -1"},
		{"svid without chain", func(c *Cache) error {
			_, err := c.PutSVIDs([]SVID{{EntryID: "a", PrivateKey: []byte("k")}})
			return err
		}, "svids[0]: cert_chain"},
		{"svid without key", func(c *Cache) error {
			_, err := c.PutSVIDs([]SVID{{EntryID: "a", CertChain: [][]byte{[]byte("c")}}})
			return err
		}, "svids[0]: private_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, filepath.Join(t.TempDir(), FileName))
			if err := c.Apply(Change{Upserts: []*typesv1.Entry{entry("a", 1)}, Revision: 1}); err != nil {
				t.Fatal(err)
			}
			before := load(t, c)
			err := tt.run(c)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(before, load(t, c), protocmp.Transform()); diff != "" {
				t.Errorf("state changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestLoad_CorruptRecordIsReported(t *testing.T) {
	tests := []struct {
		name    string
		bucket  []byte
		key     string
		value   []byte
		wantErr string
	}{
		{"entry that does not decode", bucketEntries, "a", []byte{0xff, 0xff, 0xff}, `entries/"a"`},
		{"entry under another id", bucketEntries, "z", mustMarshalEntry(t, entry("a", 1)), `entries/"z"`},
		{"svid of unknown record version", bucketSVIDs, "a", []byte{9, 1, 2}, `svids/"a"`},
		{"svid cut short", bucketSVIDs, "a", encodeSVID(svid("a"))[:20], `svids/"a"`},
		{"svid without key", bucketSVIDs, "a", encodeSVID(SVID{EntryID: "a", CertChain: [][]byte{[]byte("c")}}), `svids/"a"`},
		{"revision of the wrong size", bucketMeta, "revision", []byte{1, 2}, `meta/"revision"`},
		{"bundle that does not decode", bucketMeta, "bundle", []byte{0xff, 0xff}, `meta/"bundle"`},
		{"federated bundle that does not decode", bucketFederated, "partner.test", []byte{0xff, 0xff}, `federated/"partner.test"`},
		{"federated bundle under another trust domain", bucketFederated, "partner.test",
			mustMarshalBundle(t, &typesv1.Bundle{TrustDomain: "other.test"}), `federated/"partner.test"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			c := openCache(t, path)
			if err := c.Apply(Change{Upserts: []*typesv1.Entry{entry("a", 1)}, Revision: 1}); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			writeRaw(t, path, tt.bucket, tt.key, tt.value)

			c = openCache(t, path)
			_, err := c.Load()
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load error = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Load error = %q, want it to name %s", err, tt.wantErr)
			}
			if err := c.Reset(); err != nil {
				t.Fatalf("Reset: %v", err)
			}
			if diff := cmp.Diff(&State{Entries: []*typesv1.Entry{}}, load(t, c), protocmp.Transform()); diff != "" {
				t.Errorf("state after reset (-want +got):\n%s", diff)
			}
		})
	}
}

func mustMarshalEntry(t *testing.T, e *typesv1.Entry) []byte {
	t.Helper()
	c := openCache(t, filepath.Join(t.TempDir(), FileName))
	if err := c.Apply(Change{Upserts: []*typesv1.Entry{e}}); err != nil {
		t.Fatal(err)
	}
	var v []byte
	if err := c.db.View(func(tx *bbolt.Tx) error {
		v = append([]byte(nil), tx.Bucket(bucketEntries).Get([]byte(e.GetId()))...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustMarshalBundle(t *testing.T, b *typesv1.Bundle) []byte {
	t.Helper()
	v, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func writeRaw(t *testing.T, path string, bucket []byte, key string, value []byte) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(key), value)
	}); err != nil {
		t.Fatal(err)
	}
}

func TestOpen_Refusals(t *testing.T) {
	t.Run("file locked by another agent", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), FileName)
		openCache(t, path)
		_, err := Open(path, Options{OpenTimeout: 50 * time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "another nhid-agent") {
			t.Fatalf("second Open error = %v, want a lock error", err)
		}
	})
	t.Run("newer schema version", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), FileName)
		if err := openCache(t, path).Close(); err != nil {
			t.Fatal(err)
		}
		writeRaw(t, path, bucketMeta, "schema", encodeInt64(schemaVersion+1))
		_, err := Open(path, Options{})
		if err == nil || !strings.Contains(err.Error(), "schema version 2 is not supported") {
			t.Fatalf("Open error = %v, want a schema version error", err)
		}
	})
	t.Run("empty path", func(t *testing.T) {
		if _, err := Open("", Options{}); err == nil {
			t.Fatal("Open(\"\") succeeded")
		}
	})
}

func TestOpen_TightensLooseFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	if err := openCache(t, path).Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	openCache(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode after Open = %v, want 0600", perm)
	}
}

func TestClosedCache_ReportsErrClosed(t *testing.T) {
	c := openCache(t, filepath.Join(t.TempDir(), FileName))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Load(); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close = %v, want ErrClosed", err)
	}
	if err := c.Apply(Change{Revision: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close = %v, want ErrClosed", err)
	}
}
