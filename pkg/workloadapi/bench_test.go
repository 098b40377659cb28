package workloadapi

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	unixattestor "github.com/nhid/nhid/attestors/unix"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// benchServer serves one identity to this process.
func benchServer(b *testing.B, att Attestor) *testServer {
	b.Helper()
	ca := newTestCA(b, "example.org")
	mgr := newTestManager(b, ca)
	mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	return startServer(b, serverOptions{manager: mgr, attestor: att})
}

func benchAttestors(b *testing.B) []struct {
	name string
	att  Attestor
} {
	b.Helper()
	ua, err := unixattestor.New(unixattestor.Config{Log: discardLog()})
	if err != nil {
		b.Fatal(err)
	}
	return []struct {
		name string
		att  Attestor
	}{
		{"uid-attestor", &uidAttestor{}},
		{"unix-attestor", unixAttestor{ua}},
	}
}

// BenchmarkFetchX509SVID_NewConnection measures what a workload starting up
// waits for: dial, call, first message. Target: p99 < 2 ms.
func BenchmarkFetchX509SVID_NewConnection(b *testing.B) {
	for _, a := range benchAttestors(b) {
		b.Run(a.name, func(b *testing.B) {
			ts := benchServer(b, a.att)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				conn, err := grpc.NewClient(ts.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(withHeader(context.Background()))
				stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workload.X509SVIDRequest{})
				if err == nil {
					_, err = stream.Recv()
				}
				lat = append(lat, time.Since(start))
				cancel()
				_ = conn.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkFetchX509SVID_ExistingConnection is the same on an open
// connection: stream, first message, cancel. Without gRPC's connection
// setup, it is mostly the handler: attestation, subscription, message.
func BenchmarkFetchX509SVID_ExistingConnection(b *testing.B) {
	ts := benchServer(b, &uidAttestor{})
	conn, err := grpc.NewClient(ts.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	api := workload.NewSpiffeWorkloadAPIClient(conn)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := fetchOnce(api); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

// BenchmarkFetchX509SVID_32Clients measures throughput: 32 clients, each on
// its own connection, fetching (open stream, first message, cancel) in a
// loop.
func BenchmarkFetchX509SVID_32Clients(b *testing.B) {
	const clients = 32
	ts := benchServer(b, &uidAttestor{})
	apis := make([]workload.SpiffeWorkloadAPIClient, clients)
	for i := range apis {
		conn, err := grpc.NewClient(ts.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = conn.Close() })
		apis[i] = workload.NewSpiffeWorkloadAPIClient(conn)
	}
	var (
		left   atomic.Int64
		failed atomic.Value
		wg     sync.WaitGroup
	)
	left.Store(int64(b.N))
	b.ResetTimer()
	start := time.Now()
	for _, api := range apis {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := fetchOnce(api); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "fetches/s")
}

func fetchOnce(api workload.SpiffeWorkloadAPIClient) error {
	ctx, cancel := context.WithCancel(withHeader(context.Background()))
	defer cancel()
	stream, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// BenchmarkFetchJWTSVID measures one JWT-SVID request on an open
// connection, including attestation and minting a real ES256 token.
func BenchmarkFetchJWTSVID(b *testing.B) {
	ts := benchServer(b, &uidAttestor{})
	conn, err := grpc.NewClient(ts.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	api := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx := withHeader(context.Background())
	req := &workload.JWTSVIDRequest{Audience: []string{"db"}}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := api.FetchJWTSVID(ctx, req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(p int) time.Duration { return lat[min(len(lat)-1, len(lat)*p/100)] }
	b.ReportMetric(float64(at(50).Microseconds()), "p50-us")
	b.ReportMetric(float64(at(99).Microseconds()), "p99-us")
}
