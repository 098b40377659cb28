package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const (
	// stormSize is how many clients connect and fetch at the same time.
	stormSize = 1000
	// silentClients connect and never speak while others are served.
	silentClients = 100
	// Once the clients are gone, the agent's goroutines and open fds must
	// come back to within these of where they were before.
	goroutineSlack = 5
	fdSlack        = 2
)

// agentResources is what a misbehaving client could make the agent leak.
type agentResources struct {
	goroutines, fds int
}

func (a *agent) resources() (agentResources, error) {
	g, err := a.goroutines()
	if err != nil {
		return agentResources{}, fmt.Errorf("agent goroutines: %w", err)
	}
	fds, err := a.openFDs()
	if err != nil {
		return agentResources{}, fmt.Errorf("agent fds: %w", err)
	}
	return agentResources{goroutines: g, fds: fds}, nil
}

func TestAgent_SurvivesWorkloadSocketAbuseWithoutLeaking(t *testing.T) {
	t.Parallel()
	// The storm holds stormSize connections in this process and, with
	// their pidfds, twice that in the agent, which inherits the limit.
	raiseFDLimit(t, 4*stormSize+1024)
	s := startServer(t)
	a, agentID := startAgent(t, s)
	id := registerSelf(t, s, a, agentID, "socket-abuse")
	token := fetchJWT(t, a, "aud")
	before, err := a.resources()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("requests without the security header are InvalidArgument", func(t *testing.T) {
		testMissingHeader(t, a, token)
	})
	t.Run("malformed requests are InvalidArgument", func(t *testing.T) {
		testMalformedRequests(t, a, token)
	})
	t.Run("concurrent connections are all served", func(t *testing.T) {
		testConnectionStorm(t, a, id, before)
	})
	t.Run("silent and garbage-speaking clients do not block others", func(t *testing.T) {
		testSilentAndGarbageClients(t, a, id)
	})

	if a.exited() {
		t.Fatalf("the agent exited:\n%s", a.log())
	}
	if err := httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", a.healthPort)); err != nil {
		t.Fatalf("the agent is no longer ready: %v", err)
	}
	requireServed(t, a, id)
	var after agentResources
	eventually(t, waitTimeout, "the agent's goroutines and fds to return to their baseline", func() error {
		var err error
		if after, err = a.resources(); err != nil {
			return err
		}
		if after.goroutines > before.goroutines+goroutineSlack || after.fds > before.fds+fdSlack {
			return fmt.Errorf("before: %+v, now: %+v", before, after)
		}
		return nil
	})
	t.Logf("agent resources before the abuse: %+v, after: %+v", before, after)
}

// requireServed fails the test unless a new connection to the agent gets
// id's X.509-SVID. The connection is closed on return, so it does not count
// against the agent's resources.
func requireServed(t *testing.T, a *agent, id string) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+a.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), waitTimeout)
	defer cancel()
	resp, err := firstX509(ctx, workload.NewSpiffeWorkloadAPIClient(conn))
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	if got := resp.GetSvids(); len(got) != 1 || got[0].GetSpiffeId() != id {
		t.Fatalf("FetchX509SVID gave %d SVIDs, want one for %s", len(got), id)
	}
}

func testMissingHeader(t *testing.T, a *agent, token string) {
	calls := append(workloadCalls(token),
		workloadCall{"FetchWITSVID", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
			return firstRecv(c.FetchWITSVID(ctx, &workload.WITSVIDRequest{}))
		}},
		workloadCall{"FetchWITBundles", func(ctx context.Context, c workload.SpiffeWorkloadAPIClient) error {
			return firstRecv(c.FetchWITBundles(ctx, &workload.WITBundlesRequest{}))
		}})
	client := dialWorkload(t, a.socket)
	want, got := map[string]codes.Code{}, map[string]codes.Code{}
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		want[c.name] = codes.InvalidArgument
		got[c.name] = status.Code(c.call(ctx, client))
		cancel()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status codes without the security header (-want +got):\n%s", diff)
	}
}

func testMalformedRequests(t *testing.T, a *agent, token string) {
	client := dialWorkload(t, a.socket)
	tests := []struct {
		name string
		call func(context.Context) error
	}{
		{"FetchJWTSVID without audience", func(ctx context.Context) error {
			_, err := client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{})
			return err
		}},
		{"FetchJWTSVID with an empty audience", func(ctx context.Context) error {
			_, err := client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{""}})
			return err
		}},
		{"ValidateJWTSVID with a garbage token", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "aud", Svid: "not.a.jwt"})
			return err
		}},
		{"ValidateJWTSVID without a token", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "aud"})
			return err
		}},
		{"ValidateJWTSVID without audience", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Svid: token})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(withHeader(context.Background()), waitTimeout)
			defer cancel()
			err := tt.call(ctx)
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() == "" {
				t.Fatalf("got %v, want InvalidArgument with a reason", err)
			}
		})
	}
}

// testConnectionStorm has stormSize clients, each on its own connection,
// fetch at once and hold their streams until all are answered.
func testConnectionStorm(t *testing.T, a *agent, id string, before agentResources) {
	errs := make([]error, stormSize)
	var answered, done sync.WaitGroup
	answered.Add(stormSize)
	release := make(chan struct{})
	start := make(chan struct{})
	for i := range stormSize {
		done.Go(func() {
			<-start
			errs[i] = stormFetch(a.socket, id, answered.Done, release)
		})
	}
	close(start)
	answered.Wait()
	// Every client holds its connection and stream open here.
	peak, err := a.openFDs()
	close(release)
	done.Wait()
	if err != nil {
		t.Fatalf("agent fds: %v", err)
	}

	failed := map[string]int{}
	for _, err := range errs {
		if err != nil {
			failed[err.Error()]++
		}
	}
	if diff := cmp.Diff(map[string]int{}, failed); diff != "" {
		t.Fatalf("of %d concurrent clients, some were not served (-want +got errors):\n%s", stormSize, diff)
	}
	if peak < before.fds+stormSize {
		t.Errorf("the agent had %d fds open with every client connected, want at least %d: the clients were not concurrent",
			peak, before.fds+stormSize)
	}
}

// stormFetch fetches on a connection of its own, calls answered once it
// has its answer (or has failed) and then holds the stream open, as a
// long-lived workload does, until release closes.
func stormFetch(socket, id string, answered func(), release <-chan struct{}) error {
	var once sync.Once
	signal := func() { once.Do(answered) }
	defer signal()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(withHeader(context.Background()), 3*waitTimeout)
	defer cancel()
	stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if got := resp.GetSvids(); len(got) != 1 || got[0].GetSpiffeId() != id {
		return fmt.Errorf("got %d SVIDs, want one for %s", len(got), id)
	}
	signal()
	<-release
	return nil
}

func testSilentAndGarbageClients(t *testing.T, a *agent, id string) {
	silent := make([]net.Conn, 0, silentClients)
	t.Cleanup(func() {
		for _, c := range silent {
			_ = c.Close()
		}
	})
	for range silentClients {
		c, err := net.Dial("unix", a.socket)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		silent = append(silent, c)
	}
	// A client that speaks something other than HTTP/2 is dropped.
	garbage, err := net.Dial("unix", a.socket)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer garbage.Close()
	if _, err := garbage.Write([]byte("GET / HTTP/1.1\r\nHost: agent\r\n\r\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := garbage.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	// The agent closes it, with a reset when our bytes are left unread.
	if _, err := io.Copy(io.Discard, garbage); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the agent kept a connection that sent garbage: %v", err)
	}

	// The silent clients are still connected; others are served meanwhile.
	requireServed(t, a, id)
}
