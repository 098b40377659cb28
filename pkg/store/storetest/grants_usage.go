package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// testGrantUsage checks GrantUsage around each window's edge, with another subject whose SPIFFE ID extends the
// first one's.
func testGrantUsage(t *testing.T, s store.Store) {
	now := time.Unix(grantT0+2*86400, 500_000_000) // half a second past the second
	const a, ab = "spiffe://example.org/a", "spiffe://example.org/ab"
	ages := []int64{0, 59, 60, 61, 3599, 3600, 3601, 86399, 86400, 86401, 200000}
	for i, age := range ages {
		created := now.Unix() - age
		g := newGrant(fmt.Sprintf("a%02d", i), a, "e1", created)
		g.ExpiresAt = created + 120
		if i%4 == 3 {
			g.Status, g.EndedAt = typesv1.GrantStatus_GRANT_STATUS_DENIED, created
		}
		createGrant(t, s, g)
		createGrant(t, s, newGrant(fmt.Sprintf("b%02d", i), ab, "e2", created))
	}
	got, err := s.GrantUsage(t.Context(), a, now)
	if err != nil {
		t.Fatalf("GrantUsage: %v", err)
	}
	// Created at or after now minus the window, in whole seconds: ages up
	// to 60, 3600 and 86400 count. ACTIVE grants live at now: ages 0, 59
	// and 60 (61 is a denial; 3599 has expired).
	want := store.GrantUsage{LastMinute: 3, LastHour: 6, LastDay: 9, Active: 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GrantUsage (-want +got):\n%s", diff)
	}
	if u, err := s.GrantUsage(t.Context(), "spiffe://example.org/none", now); err != nil || u != (store.GrantUsage{}) {
		t.Errorf("GrantUsage of an unknown SPIFFE ID = %+v, %v; want zeros", u, err)
	}
	_, err = s.GrantUsage(t.Context(), "", now)
	wantErrIs(t, err, store.ErrInvalidArgument, "GrantUsage without a SPIFFE ID")
}
