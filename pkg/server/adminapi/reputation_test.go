package adminapi

import (
	"fmt"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/peercred"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/store/bolt"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
)

// reputationHarness serves the admin API with a real reputation service
// over a real bolt store on a real peer-credential socket.
type reputationHarness struct {
	rep    *reputation.Service
	clock  *clock.Fake
	client adminv1.ReputationServiceClient
}

func newReputationHarness(t *testing.T) *reputationHarness {
	t.Helper()
	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	h := &reputationHarness{clock: clock.NewFake(testNow)}
	h.rep, err = reputation.New(reputation.Config{Store: st, Clock: h.clock})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{TrustDomain: td, Store: st, Clock: h.clock, Reputation: h.rep})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "admin.sock")
	lis, err := peercred.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	unary, stream := AuthorizePeer(nil, nil)
	srv := grpc.NewServer(grpc.Creds(peercred.TransportCredentials()), grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	svc.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	h.client = adminv1.NewReputationServiceClient(dial(t, socket))
	return h
}

func (h *reputationHarness) deny(t *testing.T, id string, n int) {
	t.Helper()
	for range n {
		if _, err := h.rep.Observe(t.Context(), reputation.Event{SPIFFEID: id, Owner: "ana@example.org", Kind: reputation.KindGrantDenied, Reason: "policy", Reporter: "server"}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReputation_ListShowsDecayedScoresWithoutEvents(t *testing.T) {
	h := newReputationHarness(t)
	h.deny(t, "spiffe://example.org/b", 5) // 400
	h.deny(t, "spiffe://example.org/a", 1) // 480
	h.clock.Add(24 * time.Hour)
	var got []string
	req := &adminv1.ListReputationsRequest{PageSize: 1}
	for {
		resp, err := h.client.ListReputations(testCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetReputations() {
			got = append(got, fmt.Sprintf("%s %.0f events=%d", r.GetSpiffeId(), r.GetScore(), len(r.GetEvents())))
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	want := []string{"spiffe://example.org/a 490 events=0", "spiffe://example.org/b 450 events=0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listing (-want +got):\n%s", diff)
	}
}

func TestReputation_GetShowsTheEventsBehindTheScore(t *testing.T) {
	h := newReputationHarness(t)
	h.deny(t, "spiffe://example.org/a", 2)
	resp, err := h.client.GetReputation(testCtx(t), &adminv1.GetReputationRequest{SpiffeId: "spiffe://example.org/a"})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetReputation()
	if r.GetScore() != 460 || len(r.GetEvents()) != 2 || r.GetEvents()[0].GetScoreAfter() != 460 || r.GetOwner() != "ana@example.org" {
		t.Errorf("GetReputation = %v", r)
	}
	_, err = h.client.GetReputation(testCtx(t), &adminv1.GetReputationRequest{SpiffeId: "spiffe://example.org/never"})
	requireCode(t, err, codes.NotFound, "spiffe://example.org/never")
}

func TestReputation_ResetRecordsTheOperatorAndReason(t *testing.T) {
	h := newReputationHarness(t)
	h.deny(t, "spiffe://example.org/a", 16) // 180: restricted
	resp, err := h.client.ResetReputation(testCtx(t), &adminv1.ResetReputationRequest{SpiffeId: "spiffe://example.org/a", Reason: "false positives from a flaky policy"})
	if err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(uidOfTest())
	name := uid
	if u, err := user.LookupId(uid); err == nil {
		name = u.Username
	}
	r := resp.GetReputation()
	e := r.GetEvents()[0]
	got := []any{r.GetScore(), r.GetRestricted(), e.GetKind(), e.GetReporter(), e.GetReason(), e.GetDelta()}
	want := []any{500.0, false, "reset", "unix:" + name + "(" + uid + ")", "false positives from a flaky policy", 320.0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after reset (-want +got):\n%s", diff)
	}
	if st, _ := h.rep.Standing(t.Context(), "spiffe://example.org/a"); st.Restricted || st.Score != 500 {
		t.Errorf("standing after reset %+v", st)
	}
}

func TestReputation_BadRequestsAreRefused(t *testing.T) {
	h := newReputationHarness(t)
	h.deny(t, "spiffe://example.org/a", 1)
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  []string
	}{
		{"reset without reason", func() error {
			_, err := h.client.ResetReputation(testCtx(t), &adminv1.ResetReputationRequest{SpiffeId: "spiffe://example.org/a", Reason: " "})
			return err
		}, codes.InvalidArgument, []string{"reason: required"}},
		{"reset with a long reason", func() error {
			_, err := h.client.ResetReputation(testCtx(t), &adminv1.ResetReputationRequest{SpiffeId: "spiffe://example.org/a", Reason: strings.Repeat("r", 1025)})
			return err
		}, codes.InvalidArgument, []string{"reason: is 1025 bytes"}},
		{"reset of a bad ID without reason", func() error {
			_, err := h.client.ResetReputation(testCtx(t), &adminv1.ResetReputationRequest{SpiffeId: "nope"})
			return err
		}, codes.InvalidArgument, []string{"spiffe_id", "reason: required"}},
		{"reset of an unknown subject", func() error {
			_, err := h.client.ResetReputation(testCtx(t), &adminv1.ResetReputationRequest{SpiffeId: "spiffe://example.org/never", Reason: "r"})
			return err
		}, codes.NotFound, nil},
		{"get without ID", func() error {
			_, err := h.client.GetReputation(testCtx(t), &adminv1.GetReputationRequest{})
			return err
		}, codes.InvalidArgument, []string{"spiffe_id: required"}},
		{"list with a negative page size", func() error {
			_, err := h.client.ListReputations(testCtx(t), &adminv1.ListReputationsRequest{PageSize: -1})
			return err
		}, codes.InvalidArgument, []string{"page_size"}},
		{"list with a bad page token", func() error {
			_, err := h.client.ListReputations(testCtx(t), &adminv1.ListReputationsRequest{PageToken: "!!"})
			return err
		}, codes.InvalidArgument, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireCode(t, tt.call(), tt.code, tt.msg...)
		})
	}
	if st, _ := h.rep.Standing(t.Context(), "spiffe://example.org/a"); st.Score != 480 {
		t.Errorf("a refused reset changed the score: %+v", st)
	}
}
