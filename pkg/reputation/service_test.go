package reputation

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/notify"
	"github.com/nhid/nhid/pkg/store"
)

func TestNew_ReportsEveryConfigProblem(t *testing.T) {
	_, err := New(Config{
		RestrictBelow: 400, AlertBelow: 350, HalfLife: time.Second, MaxEvents: -1,
		Weights: map[Kind]float64{"bogus": 1, KindGrantDenied: -2000, KindReset: 10},
	})
	if err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, want := range []string{"Store: required", "RestrictBelow: 400 must be below AlertBelow (350)", "HalfLife", "MaxEvents",
		`unknown kind "bogus"`, `unknown kind "reset"`, "Weights[grant_denied]: -2000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	_, err = New(Config{Store: newHarness(t, nil).store, Baseline: 250})
	if err == nil || !strings.Contains(err.Error(), "AlertBelow: 300 is above the baseline 250") {
		t.Errorf("alert above the baseline: %v", err)
	}
}

func TestNew_FillsDefaultsAndMergesWeights(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Weights = map[Kind]float64{KindGrantReleased: 0} })
	cfg := h.svc.cfg
	want := DefaultWeights()
	want[KindGrantReleased] = 0
	got := []any{cfg.Baseline, cfg.HalfLife, cfg.AlertBelow, cfg.RestrictBelow, cfg.MaxEvents, cfg.Weights}
	if diff := cmp.Diff([]any{500.0, 24 * time.Hour, 300.0, 200.0, 50, want}, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestStanding_UnknownSubjectIsAtTheBaseline(t *testing.T) {
	h := newHarness(t, nil)
	if got := h.standing(); got != (Standing{Score: 500}) {
		t.Errorf("Standing = %+v, want the baseline", got)
	}
	if _, err := h.store.GetReputation(context.Background(), subject); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Standing stored a record: %v", err)
	}
}

func TestObserve_AppliesWeightsAndKeepsEventsNewestFirst(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxEvents = 3 })
	h.observe(KindGrantDenied)
	h.observe(KindGrantReleased)
	h.observe(KindRateLimited)
	if got := h.observe(KindAttestationFailed); got != (Standing{Score: 430}) {
		t.Fatalf("after -20 +5 -30 -25: %+v, want 430", got)
	}
	r, err := h.svc.Get(context.Background(), subject)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	var deltas []float64
	for _, e := range r.Events {
		kinds = append(kinds, e.Kind)
		deltas = append(deltas, e.Delta)
	}
	if diff := cmp.Diff([]any{[]string{"attestation_failed", "rate_limited", "grant_released"}, []float64{-25, -30, 5}, owner, 430.0},
		[]any{kinds, deltas, r.Owner, r.Score}); diff != "" {
		t.Errorf("kept events, owner, score (-want +got):\n%s", diff)
	}
	if e := r.Events[0]; e.ScoreAfter != 430 || e.At != h.clock.Now().UnixNano() || e.Reporter != "server" || e.Reason != "test" {
		t.Errorf("newest event %v", e)
	}
}

func TestObserve_ScoreIsClampedTo0And1000(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Weights = map[Kind]float64{KindGrantReleased: 1000, KindMisuseReported: -1000}
	})
	if got := h.observe(KindGrantReleased); got.Score != 1000 {
		t.Errorf("score %d after +1000 from 500, want 1000", got.Score)
	}
	h.observe(KindMisuseReported)
	if got := h.observe(KindMisuseReported); got.Score != 0 || !got.Restricted {
		t.Errorf("standing %+v after -2000, want 0 and restricted", got)
	}
}

func TestDecay_MovesHalfwayBackToTheBaselinePerHalfLife(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Weights = map[Kind]float64{KindMisuseReported: -200} })
	h.observe(KindMisuseReported) // 300
	for _, want := range []int{400, 450, 475} {
		h.clock.Add(24 * time.Hour)
		if got := h.standing(); got.Score != want {
			t.Errorf("after another half-life: %d, want %d", got.Score, want)
		}
	}
	// Events apply to the decayed score.
	if got := h.observe(KindMisuseReported); got.Score != 275 {
		t.Errorf("after -200 at 475: %d, want 275", got.Score)
	}
	if got := Decay(900, 500, -time.Hour, time.Hour); got != 900 {
		t.Errorf("Decay with a negative elapsed time = %v, want no decay", got)
	}
	if got := Decay(900, 500, 90*time.Minute, time.Hour); math.Abs(got-(500+400*math.Pow(2, -1.5))) > 1e-9 {
		t.Errorf("Decay over 1.5 half-lives = %v", got)
	}
}

func TestObserve_AlertNotifiesTheOwnerOnceUntilTheScoreRecovers(t *testing.T) {
	h := newHarness(t, nil)
	for range 10 {
		h.observe(KindGrantDenied) // down to 300: not below
	}
	if n := h.rec.notifications(); len(n) != 0 {
		t.Fatalf("notified at 300: %+v", n)
	}
	h.observe(KindGrantDenied) // 280
	h.observe(KindGrantDenied) // 260: still alerted, no second note
	notes := h.rec.notifications()
	if len(notes) != 1 {
		t.Fatalf("%d notifications, want 1: %+v", len(notes), notes)
	}
	n := notes[0]
	if n.Type != notify.TypeReputationAlert || n.Owner != owner || n.Subject != subject || n.Data["score"] != 280 || n.Data["threshold"] != "alert" {
		t.Errorf("alert notification %+v", n)
	}
	// Half a half-life later the score is back above 300 (500-240/√2 ≈ 330):
	// the next event clears the flag, and a new fall alerts again.
	h.clock.Add(12 * time.Hour)
	h.observe(KindGrantReleased)
	h.observe(KindGrantDenied)
	if len(h.rec.notifications()) != 1 {
		t.Fatal("notified while above the threshold")
	}
	h.observe(KindGrantDenied)
	if len(h.rec.notifications()) != 2 {
		t.Fatalf("a second fall below the threshold did not notify: %+v", h.rec.notifications())
	}
	if len(h.rec.revokes) != 0 {
		t.Errorf("an alert revoked grants: %v", h.rec.revokes)
	}
}

func TestObserve_RestrictRevokesGrantsNotifiesAndReportsRestricted(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Weights = map[Kind]float64{KindMisuseReported: -400} })
	h.rec.revokeN = 2
	st, err := h.svc.Observe(context.Background(), Event{SPIFFEID: subject, Owner: owner, Kind: KindMisuseReported,
		Reason: "used the token on another service", Reporter: "spiffe://example.org/rp", GrantID: "g-1"})
	if err != nil {
		t.Fatal(err)
	}
	if st != (Standing{Score: 100, Restricted: true}) || h.standing() != st {
		t.Fatalf("standing %+v / %+v, want 100 restricted", st, h.standing())
	}
	var types []string
	for _, n := range h.rec.notifications() {
		types = append(types, n.Type)
	}
	if diff := cmp.Diff([]string{notify.TypeReputationAlert, notify.TypeReputationRestricted}, types); diff != "" {
		t.Errorf("notifications (-want +got):\n%s", diff)
	}
	if r := h.rec.notifications()[1]; r.Data["revoked_grants"] != 2 || r.Data["grant_id"] != "g-1" || r.Data["reporter"] != "spiffe://example.org/rp" {
		t.Errorf("restricted notification data %v", r.Data)
	}
	if diff := cmp.Diff([]string{subject + ": reputation 100 fell below the restrict threshold 200"}, h.rec.revokes); diff != "" {
		t.Errorf("revocations (-want +got):\n%s", diff)
	}
	want := []string{audit.ActionReputationChange, audit.ActionReputationAlert, audit.ActionReputationAlert}
	if diff := cmp.Diff(want, h.rec.actions()); diff != "" {
		t.Errorf("audit actions (-want +got):\n%s", diff)
	}
	// Already restricted: no second revocation.
	h.observe(KindGrantDenied)
	if len(h.rec.revokes) != 1 || len(h.rec.notifications()) != 2 {
		t.Errorf("a subject already restricted was acted on again: %v", h.rec.revokes)
	}
}

func TestObserve_FailedRevocationKeepsTheScore(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Weights = map[Kind]float64{KindMisuseReported: -400} })
	h.rec.revokeEr = errors.New("store unavailable")
	if st := h.observe(KindMisuseReported); !st.Restricted {
		t.Fatalf("standing %+v, want restricted", st)
	}
	if !h.standing().Restricted {
		t.Error("the score was not kept")
	}
}

func TestReset_RestoresTheBaselineAndLiftsTheRestriction(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Weights = map[Kind]float64{KindMisuseReported: -400} })
	ctx := context.Background()
	if _, err := h.svc.Reset(ctx, subject, "false alarm", "unix:ops(1000)"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Reset of an unknown subject: %v, want ErrNotFound", err)
	}
	h.observe(KindMisuseReported)
	if _, err := h.svc.Reset(ctx, subject, "", "unix:ops(1000)"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Reset without a reason: %v, want ErrInvalid", err)
	}
	r, err := h.svc.Reset(ctx, subject, "false alarm", "unix:ops(1000)")
	if err != nil {
		t.Fatal(err)
	}
	e := r.Events[0]
	got := []any{r.Score, r.Restricted, r.Alerted, e.Kind, e.Delta, e.Reason, e.Reporter}
	if diff := cmp.Diff([]any{500.0, false, false, "reset", 400.0, "false alarm", "unix:ops(1000)"}, got); diff != "" {
		t.Errorf("after reset (-want +got):\n%s", diff)
	}
	if st := h.standing(); st != (Standing{Score: 500}) {
		t.Errorf("standing after reset %+v", st)
	}
	// The next fall is a new crossing.
	h.observe(KindMisuseReported)
	if len(h.rec.revokes) != 2 {
		t.Errorf("a restriction after a reset did not revoke: %v", h.rec.revokes)
	}
}

func TestObserve_BadInputIsRefusedAndStoresNothing(t *testing.T) {
	h := newHarness(t, nil)
	long := strings.Repeat("x", MaxReasonBytes+1)
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{"no subject", Event{Kind: KindGrantDenied}, "spiffe_id: required"},
		{"not a SPIFFE ID", Event{SPIFFEID: "https://example.org/x", Kind: KindGrantDenied}, "spiffe_id"},
		{"unknown kind", Event{SPIFFEID: subject, Kind: "bogus"}, `kind: "bogus"`},
		{"reset is not an event", Event{SPIFFEID: subject, Kind: KindReset}, `kind: "reset"`},
		{"long reason", Event{SPIFFEID: subject, Kind: KindGrantDenied, Reason: long}, "reason: is 1025 bytes"},
		{"long grant id", Event{SPIFFEID: subject, Kind: KindGrantDenied, GrantID: long}, "grant_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.svc.Observe(context.Background(), tt.ev)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Observe: %v, want ErrInvalid naming %q", err, tt.want)
			}
		})
	}
	if rs, _, _ := h.store.ListReputations(context.Background(), 0, ""); len(rs) != 0 {
		t.Errorf("bad input stored %d records", len(rs))
	}
}

func TestList_ShowsScoresDecayedToNowWithoutEvents(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Weights = map[Kind]float64{KindMisuseReported: -350} })
	h.observe(KindMisuseReported) // 150, restricted
	h.clock.Add(24 * time.Hour)   // 325
	rs, next, err := h.svc.List(context.Background(), 0, "")
	if err != nil || next != "" || len(rs) != 1 {
		t.Fatalf("List: %v %q %v", rs, next, err)
	}
	r := rs[0]
	got := []any{r.SpiffeId, r.Score, r.Restricted, r.Alerted, len(r.Events), r.UpdatedAt}
	if diff := cmp.Diff([]any{subject, 325.0, false, false, 0, h.clock.Now().UnixNano()}, got); diff != "" {
		t.Errorf("listed record (-want +got):\n%s", diff)
	}
}
