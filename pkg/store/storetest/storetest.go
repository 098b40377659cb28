// Package storetest is the conformance suite of store.Store: the contract
// written in pkg/store, in executable form. Every backend (bbolt, etcd) runs
// the same suite, so it checks only what the interface promises and never a
// backend's internals.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// eventTimeout bounds every wait for an event. It is generous on purpose:
// the suite asserts that things happen, never how fast.
const eventTimeout = 10 * time.Second

// suiteTest is one conformance test, given a fresh empty store.
type suiteTest struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// Run runs every conformance test as a subtest. open must return a fresh,
// empty store and register its cleanup (t.Cleanup) itself.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	groups := []struct {
		name  string
		tests []suiteTest
	}{
		{"Entries", entryTests},
		{"EntryLists", listTests},
		{"EntryChanges", changeTests},
		{"Nodes", nodeTests},
		{"JoinTokens", tokenTests},
		{"Bundles", bundleTests},
		{"Ledger", ledgerTests},
		{"Grants", grantTests},
		{"GrantLists", grantListTests},
		{"Audit", auditTests},
		{"Reputation", reputationTests},
		{"Watch", watchTests},
		{"Concurrency", concurrencyTests},
		{"Isolation", isolationTests},
		{"Context", contextTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					tc.fn(t, open(t))
				})
			}
		})
	}
}

// protoDiff compares proto messages (and slices of them) by value.
func protoDiff(want, got any, opts ...cmp.Option) string {
	return cmp.Diff(want, got, append([]cmp.Option{protocmp.Transform()}, opts...)...)
}

// newEntry builds an entry with the fields the duplicate rule looks at and
// a purpose and owner, as the API layer would pass it.
func newEntry(spiffeID, parentID string, selectors ...string) *typesv1.Entry {
	return &typesv1.Entry{
		SpiffeId:  spiffeID,
		ParentId:  parentID,
		Selectors: selectors,
		Purpose:   "conformance test",
		Owner:     "owner@example.org",
		X509Ttl:   3600,
	}
}

// createEntries stores entries and fails the test on any error.
func createEntries(t *testing.T, s store.Store, entries ...*typesv1.Entry) []*typesv1.Entry {
	t.Helper()
	created, errs, err := s.CreateEntries(t.Context(), entries)
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	if len(created) != len(entries) || len(errs) != len(entries) {
		t.Fatalf("CreateEntries returned %d entries and %d errors for %d inputs", len(created), len(errs), len(entries))
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("CreateEntries: entries[%d]: %v", i, err)
		}
		if created[i] == nil {
			t.Fatalf("CreateEntries: entries[%d] has neither an error nor a stored copy", i)
		}
	}
	return created
}

// createEntry stores one entry and fails the test on error.
func createEntry(t *testing.T, s store.Store, e *typesv1.Entry) *typesv1.Entry {
	t.Helper()
	return createEntries(t, s, e)[0]
}

// manyEntries builds n distinct entries under parent.
func manyEntries(n int, parent string) []*typesv1.Entry {
	out := make([]*typesv1.Entry, n)
	for i := range out {
		out[i] = newEntry(fmt.Sprintf("spiffe://example.org/w/%d", i), parent, fmt.Sprintf("unix:uid:%d", i))
	}
	return out
}

// revision reads the store's current revision.
func revision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

// must fails the test if err is not nil.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantErrIs fails unless err wraps target.
func wantErrIs(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one wrapping %q", what, err, target)
	}
}

// entryIDs returns the ids of entries in their order.
func entryIDs(entries []*typesv1.Entry) []string {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.GetId()
	}
	return ids
}

// sortedIDs returns the ids of entries in id order.
func sortedIDs(entries ...*typesv1.Entry) []string {
	ids := entryIDs(entries)
	slices.Sort(ids)
	return ids
}

// byID orders entries by id, the order every list promises.
func byID(a, b *typesv1.Entry) int { return strings.Compare(a.Id, b.Id) }

// getEntry reads an entry and fails the test on error.
func getEntry(t *testing.T, s store.Store, id string) *typesv1.Entry {
	t.Helper()
	e, err := s.GetEntry(t.Context(), id)
	if err != nil {
		t.Fatalf("GetEntry(%q): %v", id, err)
	}
	return e
}

// cancelledContext returns a context that has already ended.
func cancelledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
