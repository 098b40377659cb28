package agent

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

// idleConn is a client connection that never dials: only its state matters.
func idleConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///unused", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func closed(conn *grpc.ClientConn) bool { return conn.GetState() == connectivity.Shutdown }

func TestGrantStreams_RetiredConnectionClosesAfterItsLastRequest(t *testing.T) {
	tests := []struct {
		name string
		// steps run in order; after each, wantClosed says whether the
		// connection must be closed.
		steps      []string
		wantClosed []bool
	}{
		{"idle connection closes at once", []string{"retire"}, []bool{true}},
		{"one request in flight", []string{"open", "retire", "done"}, []bool{false, false, true}},
		{"two requests in flight", []string{"open", "open", "retire", "done", "done"}, []bool{false, false, false, false, true}},
		{"requests ended before the renewal", []string{"open", "done", "retire"}, []bool{false, false, true}},
		{"never retired stays open", []string{"open", "done"}, []bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g grantStreams
			conn := idleConn(t)
			for i, step := range tt.steps {
				switch step {
				case "open":
					g.open(conn)
				case "done":
					g.done(conn)
				case "retire":
					g.retire(conn)
				}
				if got := closed(conn); got != tt.wantClosed[i] {
					t.Fatalf("after step %d (%s): closed=%v, want %v", i, step, got, tt.wantClosed[i])
				}
			}
		})
	}
}

func TestServerConn_GrantCallsWithoutConnectionAreUnavailable(t *testing.T) {
	s := newServerConn()
	if _, err := s.RequestGrant(t.Context(), nil); err != errNotConnected {
		t.Errorf("RequestGrant: %v, want errNotConnected", err)
	}
	if _, err := s.WaitGrant(t.Context(), nil); err != errNotConnected {
		t.Errorf("WaitGrant: %v, want errNotConnected", err)
	}
	if _, err := s.ReleaseGrant(t.Context(), nil); err != errNotConnected {
		t.Errorf("ReleaseGrant: %v, want errNotConnected", err)
	}
	if _, err := s.ListGrants(t.Context(), nil); err != errNotConnected {
		t.Errorf("ListGrants: %v, want errNotConnected", err)
	}
}

func TestServerConn_SwapKeepsARequestsConnectionUntilItEnds(t *testing.T) {
	s := newServerConn()
	old := idleConn(t)
	s.swap(old)
	if _, conn := s.grantClient(true); conn != old {
		t.Fatal("grantClient did not return the current connection")
	}
	s.retire(s.swap(idleConn(t)))
	if closed(old) {
		t.Fatal("the replaced connection closed under a request in flight")
	}
	s.grants.done(old)
	if !closed(old) {
		t.Fatal("the replaced connection stayed open after its last request")
	}
}
