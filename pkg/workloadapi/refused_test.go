package workloadapi

import (
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// refusals collects what OnRefused is told.
type refusals struct {
	mu  sync.Mutex
	got []Refusal
}

func (r *refusals) add(ref Refusal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, ref)
}

func (r *refusals) all() []Refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Refusal(nil), r.got...)
}

func TestOnRefused_IsToldOfAttestedCallersRefusedAnIdentity(t *testing.T) {
	env := newX509Env(t)
	env.mgr.setIdentities(
		env.mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()),
		env.mgr.identity("e2", "spiffe://example.org/not-mine", "", "unix:uid:424242"),
	)
	seen := &refusals{}
	env.srv.handler.onRefused = seen.add
	raw := env.srv.rawClient(t)

	_, err := raw.FetchJWTSVID(withHeader(testContext(t)), &workload.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: "spiffe://example.org/not-mine"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("FetchJWTSVID of another's identity: %v, want PermissionDenied", err)
	}
	if _, err := raw.FetchJWTSVID(withHeader(testContext(t)), &workload.JWTSVIDRequest{Audience: []string{"db"}}); err != nil {
		t.Fatalf("FetchJWTSVID of its own: %v", err)
	}
	want := []Refusal{{
		Method: "/SpiffeWorkloadAPI/FetchJWTSVID", PID: int32(os.Getpid()), UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		SPIFFEID: "spiffe://example.org/not-mine", Selectors: []string{selfSelector()},
	}}
	if diff := cmp.Diff(want, seen.all()); diff != "" {
		t.Errorf("refusals (-want +got):\n%s", diff)
	}
}

func TestOnRefused_IsNotToldOfAttestationFailures(t *testing.T) {
	mgr := newTestManager(t, newTestCA(t, "example.org"))
	srv := startServer(t, serverOptions{manager: mgr, attestor: &fixedAttestor{err: errors.New("attestor down")}})
	seen := &refusals{}
	srv.handler.onRefused = seen.add
	_, err := srv.rawClient(t).FetchJWTSVID(withHeader(testContext(t)), &workload.JWTSVIDRequest{Audience: []string{"db"}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("FetchJWTSVID: %v, want PermissionDenied", err)
	}
	if got := seen.all(); len(got) != 0 {
		t.Errorf("refusals = %+v, want none: the attestor saw the failure", got)
	}
}
