package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

var bundleTests = []suiteTest{
	{"GetBeforeFirstUpdateIsNotFound", testGetBundleNotFound},
	{"UpdateCreatesAndBumpsSequence", testUpdateBundle},
	{"UpdateFnErrorChangesNothing", testUpdateBundleFnError},
	{"ListAndDeleteFederatedBundles", testListDeleteBundles},
}

var ledgerTests = []suiteTest{
	{"RecordedRowsCanBeLookedUp", testLedgerRecordGet},
	{"PruneDropsExpiredRows", testLedgerPrune},
}

func testGetBundleNotFound(t *testing.T, s store.Store) {
	_, err := s.GetBundle(t.Context(), "example.org")
	wantErrIs(t, err, store.ErrNotFound, "GetBundle before the first update")
}

func addAuthority(der string) func(*typesv1.Bundle) error {
	return func(b *typesv1.Bundle) error {
		b.X509Authorities = append(b.X509Authorities, &typesv1.X509Authority{Asn1: []byte(der)})
		b.RefreshHint = 300
		return nil
	}
}

func testUpdateBundle(t *testing.T, s store.Store) {
	var seen *typesv1.Bundle
	first, err := s.UpdateBundle(t.Context(), "example.org", func(b *typesv1.Bundle) error {
		seen = &typesv1.Bundle{TrustDomain: b.TrustDomain, SequenceNumber: b.SequenceNumber}
		return addAuthority("ca-1")(b)
	})
	if err != nil {
		t.Fatalf("first UpdateBundle: %v", err)
	}
	if seen.TrustDomain != "example.org" || len(first.X509Authorities) != 1 {
		t.Errorf("fn saw trust domain %q; result %v", seen.TrustDomain, first)
	}
	if first.SequenceNumber <= seen.SequenceNumber {
		t.Errorf("sequence number %d after the first update, want it bumped", first.SequenceNumber)
	}
	revBefore := revision(t, s)
	second, err := s.UpdateBundle(t.Context(), "example.org", addAuthority("ca-2"))
	if err != nil {
		t.Fatalf("second UpdateBundle: %v", err)
	}
	if second.SequenceNumber <= first.SequenceNumber {
		t.Errorf("sequence number went from %d to %d, want it bumped", first.SequenceNumber, second.SequenceNumber)
	}
	if rev := revision(t, s); rev <= revBefore {
		t.Errorf("bundle update left the revision at %d, want more than %d", rev, revBefore)
	}
	want := &typesv1.Bundle{
		TrustDomain:     "example.org",
		X509Authorities: []*typesv1.X509Authority{{Asn1: []byte("ca-1")}, {Asn1: []byte("ca-2")}},
		RefreshHint:     300,
		SequenceNumber:  second.SequenceNumber,
	}
	got, err := s.GetBundle(t.Context(), "example.org")
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	if diff := protoDiff(want, got); diff != "" {
		t.Errorf("stored bundle (-want +got):\n%s", diff)
	}
	_, err = s.GetBundle(t.Context(), "other.org")
	wantErrIs(t, err, store.ErrNotFound, "GetBundle of another trust domain")
}

func testUpdateBundleFnError(t *testing.T, s store.Store) {
	stored, err := s.UpdateBundle(t.Context(), "example.org", addAuthority("ca-1"))
	if err != nil {
		t.Fatalf("UpdateBundle: %v", err)
	}
	before := revision(t, s)
	errRefused := errors.New("refused by fn")
	_, err = s.UpdateBundle(t.Context(), "example.org", func(b *typesv1.Bundle) error {
		b.X509Authorities = nil
		return errRefused
	})
	wantErrIs(t, err, errRefused, "UpdateBundle whose fn fails")
	got, err := s.GetBundle(t.Context(), "example.org")
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	if diff := protoDiff(stored, got); diff != "" {
		t.Errorf("the bundle changed (-want +got):\n%s", diff)
	}
	if after := revision(t, s); after != before {
		t.Errorf("revision moved from %d to %d", before, after)
	}
	_, err = s.UpdateBundle(t.Context(), "new.org", func(*typesv1.Bundle) error { return errRefused })
	wantErrIs(t, err, errRefused, "first UpdateBundle whose fn fails")
	_, err = s.GetBundle(t.Context(), "new.org")
	wantErrIs(t, err, store.ErrNotFound, "GetBundle after an aborted first update")
}

func newIssued(id string, expires time.Time) *typesv1.IssuedSVID {
	return &typesv1.IssuedSVID{
		Id:        id,
		Kind:      typesv1.SVIDKind_SVID_KIND_X509,
		SpiffeId:  "spiffe://example.org/w",
		EntryId:   "entry-1",
		Node:      "spiffe://example.org/agent",
		Purpose:   "conformance test",
		Owner:     "owner@example.org",
		IssuedAt:  expires.Add(-time.Hour).Unix(),
		ExpiresAt: expires.Unix(),
		Audience:  []string{"aud"},
	}
}

func testLedgerRecordGet(t *testing.T, s store.Store) {
	rows := []*typesv1.IssuedSVID{
		newIssued("0a0b0c", tokenEpoch),
		newIssued("jti-123", tokenEpoch.Add(time.Hour)),
	}
	rows[1].Kind = typesv1.SVIDKind_SVID_KIND_JWT
	if err := s.RecordIssued(t.Context(), rows); err != nil {
		t.Fatalf("RecordIssued: %v", err)
	}
	for _, want := range rows {
		got, err := s.GetIssued(t.Context(), want.Id)
		if err != nil {
			t.Fatalf("GetIssued(%q): %v", want.Id, err)
		}
		if diff := protoDiff(want, got); diff != "" {
			t.Errorf("row %q (-want +got):\n%s", want.Id, diff)
		}
	}
	_, err := s.GetIssued(t.Context(), "unknown")
	wantErrIs(t, err, store.ErrNotFound, "GetIssued of an unknown id")
}

func testLedgerPrune(t *testing.T, s store.Store) {
	var rows []*typesv1.IssuedSVID
	for i := range 10 {
		rows = append(rows, newIssued(fmt.Sprintf("serial-%02d", i), tokenEpoch.Add(time.Duration(i)*time.Minute)))
	}
	if err := s.RecordIssued(t.Context(), rows); err != nil {
		t.Fatalf("RecordIssued: %v", err)
	}
	// Rows 0..3 expired before epoch+3m30s; 4..9 did not.
	n, err := s.PruneIssued(t.Context(), tokenEpoch.Add(3*time.Minute+30*time.Second))
	if err != nil || n != 4 {
		t.Fatalf("PruneIssued = %d, %v; want 4", n, err)
	}
	var left []string
	for _, r := range rows {
		_, err := s.GetIssued(t.Context(), r.Id)
		switch {
		case err == nil:
			left = append(left, r.Id)
		case !errors.Is(err, store.ErrNotFound):
			t.Fatalf("GetIssued(%q): %v", r.Id, err)
		}
	}
	want := []string{"serial-04", "serial-05", "serial-06", "serial-07", "serial-08", "serial-09"}
	if diff := cmp.Diff(want, slices.Sorted(slices.Values(left))); diff != "" {
		t.Errorf("rows left (-want +got):\n%s", diff)
	}
}

// testListDeleteBundles stores bundles of several trust domains, as a
// server federating with others does, lists and deletes them, and checks
// what watchers see.
func testListDeleteBundles(t *testing.T, s store.Store) {
	if got, err := s.ListBundles(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("ListBundles of an empty store = %v, %v", got, err)
	}
	for _, td := range []string{"partner.test", "example.org", "acme.example"} {
		if _, err := s.UpdateBundle(t.Context(), td, addAuthority("ca-of-"+td)); err != nil {
			t.Fatalf("UpdateBundle(%s): %v", td, err)
		}
	}
	got, err := s.ListBundles(t.Context())
	if err != nil {
		t.Fatalf("ListBundles: %v", err)
	}
	var tds []string
	for _, b := range got {
		tds = append(tds, b.GetTrustDomain())
		if len(b.GetX509Authorities()) != 1 || string(b.GetX509Authorities()[0].GetAsn1()) != "ca-of-"+b.GetTrustDomain() {
			t.Errorf("listed bundle %v", b)
		}
	}
	if diff := cmp.Diff([]string{"acme.example", "example.org", "partner.test"}, tds); diff != "" {
		t.Errorf("listed trust domains (-want +got):\n%s", diff)
	}

	events := watch(t, s)
	revBefore := revision(t, s)
	before, err := s.GetBundle(t.Context(), "partner.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBundle(t.Context(), "partner.test"); err != nil {
		t.Fatalf("DeleteBundle: %v", err)
	}
	ev := nextEvent(t, events)
	if ev.Kind != store.EventBundle || ev.Bundle != nil || protoDiff(before, ev.PrevBundle) != "" || ev.Revision <= revBefore {
		t.Errorf("delete event %+v, want an EventBundle with the deleted bundle as PrevBundle after revision %d", ev, revBefore)
	}
	if rev := revision(t, s); rev <= revBefore {
		t.Errorf("DeleteBundle left the revision at %d", rev)
	}
	_, err = s.GetBundle(t.Context(), "partner.test")
	wantErrIs(t, err, store.ErrNotFound, "GetBundle after DeleteBundle")
	wantErrIs(t, s.DeleteBundle(t.Context(), "partner.test"), store.ErrNotFound, "DeleteBundle of a deleted bundle")
	wantErrIs(t, s.DeleteBundle(t.Context(), ""), store.ErrInvalidArgument, "DeleteBundle without a trust domain")
	if got, err := s.ListBundles(t.Context()); err != nil || len(got) != 2 {
		t.Errorf("ListBundles after a delete = %d bundles, %v; want 2", len(got), err)
	}
	// A bundle stored again after a delete starts a new life.
	again, err := s.UpdateBundle(t.Context(), "partner.test", addAuthority("ca-2"))
	if err != nil || len(again.GetX509Authorities()) != 1 {
		t.Errorf("UpdateBundle after a delete = %v, %v; want only the new authority", again, err)
	}
	if ev := nextEvent(t, events); ev.Kind != store.EventBundle || ev.Bundle.GetTrustDomain() != "partner.test" {
		t.Errorf("event after storing again: %+v", ev)
	}
}
