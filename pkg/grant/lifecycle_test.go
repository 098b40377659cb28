package grant

import (
	"context"
	"errors"
	"github.com/nhid/nhid/pkg/grantreq"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestRelease_EndsTheHoldersGrant(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	g := h.mustRequest(request("repo:read")).Grant
	if _, err := h.svc.Release(ctx, []string{"other-entry"}, g.GetId(), agentID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("release by another entry = %v, want ErrNotFound", err)
	}
	h.clock.Add(time.Minute)
	got, err := h.svc.Release(ctx, []string{"x", "entry-1"}, g.GetId(), agentID)
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if got.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_RELEASED || got.GetEndedAt() != h.clock.Now().Unix() || got.GetEndedBy() != agentID {
		t.Errorf("released grant: %v, ended %d by %q", got.GetStatus(), got.GetEndedAt(), got.GetEndedBy())
	}
	again, err := h.svc.Release(ctx, []string{"entry-1"}, g.GetId(), agentID)
	if err != nil || again.GetRevision() != got.GetRevision() {
		t.Errorf("second Release = %v (revision %d, was %d), want the same grant unchanged", err, again.GetRevision(), got.GetRevision())
	}
	if _, err := h.svc.Release(ctx, []string{"entry-1"}, "unknown", agentID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("release of an unknown grant = %v, want ErrNotFound", err)
	}
	h.entry.Purpose = "denied"
	denied := h.mustRequest(request("repo:read")).Grant
	if _, err := h.svc.Release(ctx, []string{"entry-1"}, denied.GetId(), agentID); !errors.Is(err, ErrEnded) {
		t.Errorf("release of a denied grant = %v, want ErrEnded", err)
	}
}

func TestRevoke_EndsALiveGrantOnce(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	g := h.mustRequest(request("repo:read")).Grant
	if _, err := h.svc.Revoke(ctx, g.GetId(), "", "uid:0"); !errors.Is(err, grantreq.ErrInvalidRequest) {
		t.Fatalf("revoke without a reason = %v, want grantreq.ErrInvalidRequest", err)
	}
	got, err := h.svc.Revoke(ctx, g.GetId(), "credential leaked", "uid:0")
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	want := [4]string{"GRANT_STATUS_REVOKED", "credential leaked", "uid:0", "ci"}
	if diff := cmp.Diff(want, [4]string{got.GetStatus().String(), got.GetDecisionReason(), got.GetEndedBy(), got.GetRule()}); diff != "" {
		t.Errorf("revoked grant status, reason, ended_by, rule (-want +got):\n%s", diff)
	}
	_, err = h.svc.Revoke(ctx, g.GetId(), "again", "uid:0")
	if !errors.Is(err, ErrEnded) || !strings.Contains(err.Error(), "is revoked") {
		t.Errorf("second Revoke = %v, want ErrEnded saying it is revoked", err)
	}
	if _, err := h.svc.Revoke(ctx, "unknown", "x", "uid:0"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoke of an unknown grant = %v, want ErrNotFound", err)
	}
}

func TestExpiry_IsSeenOnReadAndRecordedBySweep(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	active := h.mustRequest(request("repo:read")).Grant
	r := request("deploy")
	r.Resource = "prod/db"
	pending := h.mustRequest(r).Grant
	h.clock.Add(DefaultApprovalTimeout)

	listed, _, err := h.svc.List(ctx, store.ListGrantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, g := range listed {
		got[g.GetId()] = g.GetStatus().String()
	}
	want := map[string]string{active.GetId(): "GRANT_STATUS_EXPIRED", pending.GetId(): "GRANT_STATUS_DENIED"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listed statuses (-want +got):\n%s", diff)
	}
	if live, _, _ := h.svc.List(ctx, store.ListGrantsRequest{Status: typesv1.GrantStatus_GRANT_STATUS_ACTIVE}); len(live) != 0 {
		t.Errorf("List(ACTIVE) shows %d expired grants", len(live))
	}
	if n := h.svc.Sweep(ctx); n != 2 {
		t.Errorf("Sweep recorded %d expiries, want 2", n)
	}
	stored, err := h.store.GetGrant(ctx, pending.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if stored.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_DENIED || stored.GetDecisionReason() != reasonTimedOut || stored.GetEndedAt() != pending.GetApprovalDeadline() {
		t.Errorf("timed-out approval stored as %v (%q), ended %d", stored.GetStatus(), stored.GetDecisionReason(), stored.GetEndedAt())
	}
	if n := h.svc.Sweep(ctx); n != 0 {
		t.Errorf("second Sweep recorded %d expiries, want 0", n)
	}
}

func TestGet_RecordsADueExpiry(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	g := h.mustRequest(request("repo:read")).Grant
	h.clock.Add(10 * time.Minute)
	got, err := h.svc.Get(ctx, g.GetId())
	if err != nil {
		t.Fatal(err)
	}
	stored, err := h.store.GetGrant(ctx, g.GetId())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*typesv1.Grant{got, stored} {
		if x.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_EXPIRED || x.GetEndedAt() != g.GetExpiresAt() {
			t.Errorf("grant after expiry: %v ended %d, want EXPIRED at %d", x.GetStatus(), x.GetEndedAt(), g.GetExpiresAt())
		}
	}
	if _, err := h.svc.Release(ctx, []string{"entry-1"}, g.GetId(), agentID); !errors.Is(err, ErrEnded) {
		t.Errorf("release of an expired grant = %v, want ErrEnded", err)
	}
}

// pending stores a grant that waits for approval.
func (h *harness) pending() *typesv1.Grant {
	h.t.Helper()
	r := request("deploy")
	r.Resource = "prod/payments"
	g := h.mustRequest(r).Grant
	if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_PENDING {
		h.t.Fatalf("status %v (%s: %s), want PENDING", g.GetStatus(), g.GetRule(), g.GetDecisionReason())
	}
	return g
}

// wait runs Wait in the background.
func (h *harness) wait(id string) <-chan Result {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	out := make(chan Result, 1)
	go func() {
		defer cancel()
		res, err := h.svc.Wait(ctx, id)
		if err != nil {
			h.t.Errorf("Wait: %v", err)
		}
		out <- res
	}()
	return out
}

func TestWait_PendingGrantTimesOutAsDenied(t *testing.T) {
	h := newHarness(t)
	h.svc.recheck = 10 * time.Millisecond
	g := h.pending()
	done := h.wait(g.GetId())
	h.clock.Add(DefaultApprovalTimeout)
	res := <-done
	if res.Grant.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_DENIED || res.Grant.GetDecisionReason() != reasonTimedOut || res.Token != "" {
		t.Errorf("wait ended with %v (%q), token %v; want DENIED, approval timed out", res.Grant.GetStatus(), res.Grant.GetDecisionReason(), res.Token != "")
	}
}

func TestWait_RevocationEndsTheWaitThroughTheWatch(t *testing.T) {
	h := newHarness(t)
	// Without the watch, the wait would sleep past the test's timeout.
	h.svc.recheck = time.Hour
	h.run()
	g := h.pending()
	done := h.wait(g.GetId())
	if _, err := h.svc.Revoke(context.Background(), g.GetId(), "not today", "uid:0"); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.Grant.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_REVOKED {
			t.Errorf("wait ended with %v, want REVOKED", res.Grant.GetStatus())
		}
	case <-time.After(waitTimeout):
		t.Fatal("the wait did not end after the revocation")
	}
}

func TestWait_GrantApprovedElsewhereGetsItsToken(t *testing.T) {
	h := newHarness(t)
	h.svc.recheck = time.Hour
	h.run()
	g := h.pending()
	done := h.wait(g.GetId())
	// An approval recorded by another server sharing the store: only the
	// watch tells this one.
	_, err := h.store.UpdateGrant(context.Background(), g.GetId(), func(x *typesv1.Grant) error {
		x.Status, x.ExpiresAt = typesv1.GrantStatus_GRANT_STATUS_ACTIVE, h.clock.Now().Add(5*time.Minute).Unix()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.Grant.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE || res.Token == "" {
		t.Fatalf("wait ended with %v, token %v; want ACTIVE with a token", res.Grant.GetStatus(), res.Token != "")
	}
	_, claims := h.verify(res.Token)
	if claims["txn"] != g.GetId() || claims["exp"] != float64(res.Grant.GetExpiresAt()) {
		t.Errorf("token txn %v exp %v, want %s and %d", claims["txn"], claims["exp"], g.GetId(), res.Grant.GetExpiresAt())
	}
}

func TestWait_UnknownGrantIsNotFound(t *testing.T) {
	h := newHarness(t)
	if _, err := h.svc.Wait(context.Background(), "unknown"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Wait = %v, want ErrNotFound", err)
	}
}
