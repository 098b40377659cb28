package main

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/server/adminapi"
	"github.com/nhid/nhid/pkg/store/bolt"
)

// newReputationServer is a real admin API with a real reputation service
// over a real bolt store.
func newReputationServer(t *testing.T) (*server, *reputation.Service) {
	t.Helper()
	dir := shortTempDir(t)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	rep, err := reputation.New(reputation.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	s := serveAdmin(t, dir, st, adminapi.Config{Reputation: rep})
	return s, rep
}

func observe(t *testing.T, rep *reputation.Service, id string, kind reputation.Kind, n int) {
	t.Helper()
	for range n {
		_, err := rep.Observe(context.Background(), reputation.Event{SPIFFEID: id, Owner: "ana@example.org", Kind: kind,
			Reason: "policy denied deploy:prod", Reporter: "server", GrantID: "g-1"})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestReputation_ListShowAndReset(t *testing.T) {
	s, rep := newReputationServer(t)
	if out := s.mustRun(t, "reputation", "list"); !strings.Contains(out, "no reputation scores yet") {
		t.Errorf("empty list: %q", out)
	}
	if out := s.mustRun(t, "-o", "json", "reputation", "list"); !strings.Contains(out, `"reputations": []`) {
		t.Errorf("empty JSON list: %q", out)
	}
	observe(t, rep, "spiffe://example.org/deployer", reputation.KindGrantDenied, 16) // 180
	observe(t, rep, "spiffe://example.org/builder", reputation.KindGrantDenied, 11)  // 280

	list := s.mustRun(t, "reputation", "list")
	var rows []string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		rows = append(rows, strings.Join(strings.Fields(line), " "))
	}
	want := []string{"SPIFFE ID SCORE STANDING OWNER", "spiffe://example.org/builder 280 alert ana@example.org",
		"spiffe://example.org/deployer 180 restricted ana@example.org"}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("list (-want +got):\n%s", diff)
	}
	show := s.mustRun(t, "reputation", "show", "spiffe://example.org/deployer")
	for _, want := range []string{"Score:", "180", "restricted", "ana@example.org", "Events (newest first):", "grant_denied", "-20", "policy denied deploy:prod", "g-1"} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}
	var got struct {
		Reputation struct {
			Score  float64 `json:"score"`
			Events []struct {
				Kind string `json:"kind"`
			} `json:"events"`
		} `json:"reputation"`
	}
	if err := json.Unmarshal([]byte(s.mustRun(t, "-o", "json", "reputation", "show", "spiffe://example.org/deployer")), &got); err != nil {
		t.Fatal(err)
	}
	if math.Round(got.Reputation.Score) != 180 || len(got.Reputation.Events) != 16 {
		t.Errorf("show -o json: %+v", got)
	}

	if r := s.run(t, "reputation", "reset", "spiffe://example.org/deployer"); r.code != 2 || !strings.Contains(r.stderr, "--reason is required") {
		t.Errorf("reset without --reason: exit %d, %q", r.code, r.stderr)
	}
	out := s.mustRun(t, "reputation", "reset", "spiffe://example.org/deployer", "--reason", "policy bug fixed")
	for _, want := range []string{"reset the reputation of spiffe://example.org/deployer to 500", "reset", "policy bug fixed", "unix:"} {
		if !strings.Contains(out, want) {
			t.Errorf("reset output lacks %q:\n%s", want, out)
		}
	}
	if st, _ := rep.Standing(context.Background(), "spiffe://example.org/deployer"); st.Restricted || st.Score != 500 {
		t.Errorf("standing after reset: %+v", st)
	}
	if r := s.run(t, "reputation", "show", "spiffe://example.org/never"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("show of an unknown ID: exit %d, %q", r.code, r.stderr)
	}
}
