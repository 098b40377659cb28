package agentapi

import (
	"context"
	"fmt"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// storm is a reconnect storm: every one of many attested agents opens a
// Sync stream from scratch at the same moment, as after a server restart.
type storm struct {
	agents, entries int
	// gate is the server's SyncReads and SyncQueue.
	reads, queue int
}

// stormResult is what a storm measured.
type stormResult struct {
	synced, refused int64
	// peakGrowth is the highest heap (live objects and garbage not yet
	// swept) during the storm above the heap with every agent connected
	// and idle; peakLive the highest heap the collector found live.
	peakGrowth, peakLive uint64
	took                 time.Duration
}

// run attests the agents, connects each over its own mTLS connection and
// releases the storm; every agent retries refusals after the hinted pause
// until it has its snapshot.
func (s storm) run(tb testing.TB) stormResult {
	tb.Helper()
	// The etcd store, as in a deployment of several servers; bbolt's
	// watchers preallocate their whole buffer (see docs/ha.md).
	m := etcdtest.Start(tb, etcdtest.Options{})
	h := newHarness(tb,
		withStore(func(tb testing.TB) store.Store {
			st, err := etcd.Open(context.Background(), etcd.Config{Endpoints: []string{m.ClientURL}, Prefix: "/storm/"})
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { _ = st.Close() })
			return st
		}),
		withConfig(func(c *Config) { c.SyncReads, c.SyncQueue = s.reads, s.queue }))
	h.createStormEntries(s.entries)
	clients := h.attestStormAgents(s.agents)
	runtime.GC()
	base, baseLive := liveHeap(), markedLive()
	peak := &peakHeap{}
	stop := peak.sample()
	var res stormResult
	var refused atomic.Int64
	start := time.Now()
	g := errgroup.Group{}
	for _, c := range clients {
		g.Go(func() error { return syncUntilDone(c, s.entries, &refused) })
	}
	err := g.Wait()
	res.took, res.refused = time.Since(start), refused.Load()
	stop()
	if err != nil {
		tb.Fatal(err)
	}
	res.synced = int64(len(clients))
	res.peakGrowth = peak.max.Load() - min(base, peak.max.Load())
	res.peakLive = peak.live.Load() - min(baseLive, peak.live.Load())
	return res
}

// createStormEntries stores a node alias every storm agent matches and
// entries under it, so that each snapshot carries n entries.
func (h *harness) createStormEntries(n int) {
	alias := &typesv1.Entry{SpiffeId: "spiffe://example.org/storm/nodes", ParentId: agentid.Server(td).String(), Selectors: []string{"storm:all"}}
	es := []*typesv1.Entry{alias}
	for i := range n {
		es = append(es, &typesv1.Entry{
			SpiffeId: fmt.Sprintf("spiffe://example.org/storm/workload/%d", i), ParentId: alias.SpiffeId,
			Selectors: []string{"unix:uid:" + strconv.Itoa(1000+i), "k8s:ns:storm", "k8s:sa:workload-" + strconv.Itoa(i)},
			Purpose:   "reconnect storm workload", Owner: "storm@example.org", DnsNames: []string{fmt.Sprintf("w%d.storm.example.org", i)},
		})
	}
	h.createEntries(es...)
}

// attestStormAgents attests n nodes through one connection, then gives
// each its own mTLS connection (opened, so that the storm is the Sync
// calls, not the handshakes).
func (h *harness) attestStormAgents(n int) []agentv1.AgentServiceClient {
	anon := h.anonymous()
	clients := make([]agentv1.AgentServiceClient, n)
	g := errgroup.Group{}
	g.SetLimit(16)
	for i := range clients {
		g.Go(func() error {
			key := newKey(h.t)
			ctx, cancel := context.WithTimeout(context.Background(), 6*waitTimeout)
			defer cancel()
			res, err := attestOn(ctx, anon, &agentv1.AttestParams{Attestor: challengeType,
				Payload: challengePayload(fmt.Sprintf("storm-%d", i), 1, "storm:all"), Csr: newCSR(h.t, key, "")})
			if err != nil {
				return fmt.Errorf("attest agent %d: %w", i, err)
			}
			clients[i], err = h.connect(svidFrom(h.t, res.GetSvidChain(), key))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		h.t.Fatal(err)
	}
	return clients
}

// attestOn runs a one-round challenge attestation on client.
func attestOn(ctx context.Context, client agentv1.AgentServiceClient, params *agentv1.AttestParams) (*agentv1.AttestResult, error) {
	stream, err := client.Attest(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&agentv1.AttestRequest{Step: &agentv1.AttestRequest_Params{Params: params}}); err != nil {
		return nil, streamStatus(stream, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if res := resp.GetResult(); res != nil {
			return res, nil
		}
		answer := &agentv1.AttestRequest{Step: &agentv1.AttestRequest_ChallengeResponse{ChallengeResponse: answerChallenge(resp.GetChallenge())}}
		if err := stream.Send(answer); err != nil {
			return nil, streamStatus(stream, err)
		}
	}
}

// connect opens an mTLS connection with svid and waits until it is up.
func (h *harness) connect(svid *x509svid.SVID) (agentv1.AgentServiceClient, error) {
	tlsCfg := tlsconfig.MTLSClientConfig(svid, h.bundle, tlsconfig.AuthorizeID(agentid.Server(td)))
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, err
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	client := agentv1.NewAgentServiceClient(conn)
	// A cheap authenticated call completes the handshake now.
	ctx, cancel := context.WithTimeout(context.Background(), 6*waitTimeout)
	defer cancel()
	_, err = client.MintJWTSVID(ctx, &agentv1.MintJWTSVIDRequest{})
	if status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return client, nil
}

// syncUntilDone opens Sync from scratch until a snapshot of want entries
// completes, pausing as the server's retry-after hint says when refused.
func syncUntilDone(client agentv1.AgentServiceClient, want int, refused *atomic.Int64) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		n, trailer, err := snapshotOnce(client)
		if err == nil {
			if n != want {
				return fmt.Errorf("snapshot of %d entries, want %d", n, want)
			}
			return nil
		}
		if status.Code(err) != codes.Unavailable {
			return err
		}
		refused.Add(1)
		secs, perr := strconv.Atoi(firstValue(trailer, RetryAfterKey))
		if perr != nil {
			return fmt.Errorf("refused without a retry-after hint: %v", err)
		}
		time.Sleep(time.Duration(secs) * time.Second)
	}
	return fmt.Errorf("not synced within 5 minutes")
}

// snapshotOnce reads one stream until its snapshot is done, counting the
// entries and dropping them.
func snapshotOnce(client agentv1.AgentServiceClient) (int, metadata.MD, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := client.Sync(ctx, &agentv1.SyncRequest{})
	if err != nil {
		return 0, nil, err
	}
	n := 0
	for {
		msg, err := stream.Recv()
		if err != nil {
			return 0, stream.Trailer(), err
		}
		n += len(msg.GetUpserts())
		if msg.GetSnapshotDone() {
			return n, nil, nil
		}
	}
}

func firstValue(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// liveHeap is the bytes of live and not yet swept heap objects.
func liveHeap() uint64 { return readMetric("/memory/classes/heap/objects:bytes") }

// markedLive is the heap the last collection found live.
func markedLive() uint64 { return readMetric("/gc/heap/live:bytes") }

func readMetric(name string) uint64 {
	s := []rtmetrics.Sample{{Name: name}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// peakHeap samples liveHeap and markedLive until stopped and keeps the
// highest values.
type peakHeap struct{ max, live atomic.Uint64 }

func (p *peakHeap) sample() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if h := liveHeap(); h > p.max.Load() {
				p.max.Store(h)
			}
			if h := markedLive(); h > p.live.Load() {
				p.live.Store(h)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// TestSync_AReconnectStormOf2000AgentsSyncsThemAllWithinBoundedMemory:
// with 32 reads and 256 waiting, the 2000 agents that reconnect at once
// are partly refused with a retry-after hint, come back spread out, and
// all end synced, while the heap grows by what the slots hold, not by
// what 2000 snapshots would.
func TestSync_AReconnectStormOf2000AgentsSyncsThemAllWithinBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("a 2000-agent storm is not short")
	}
	if raceEnabled {
		t.Skip("a 2000-agent storm exceeds the race detector's goroutine limit")
	}
	const entries = 200
	res := storm{agents: 2000, entries: entries, reads: 32, queue: 256}.run(t)
	t.Logf("2000 agents synced %d entries each in %v; %d refusals with retry-after; heap peak %.1f MiB above idle, %.1f MiB of it live",
		entries, res.took.Round(time.Millisecond), res.refused, float64(res.peakGrowth)/(1<<20), float64(res.peakLive)/(1<<20))
	if res.refused == 0 {
		t.Error("no agent was refused: the storm never filled the read queue")
	}
	// The live heap grows by the slots' snapshots (200 decoded entries
	// each, with their pages) and by the TLS buffers of 4000 connections
	// (both ends live in this process) once traffic flows; without the
	// gate every snapshot is in memory at once: BenchmarkSyncStorm
	// measured 138 MiB with it and 326 MiB without.
	const bound = 256 << 20
	if res.peakLive > bound {
		t.Errorf("the live heap grew by %.1f MiB during the storm, more than the %d MiB bound", float64(res.peakLive)/(1<<20), bound>>20)
	}
}

// BenchmarkSyncStorm compares the storm's peak heap with the gate and
// with it wide open:
//
//	go test -run '^$' -bench SyncStorm -benchtime 1x ./pkg/server/agentapi/
func BenchmarkSyncStorm(b *testing.B) {
	if raceEnabled {
		b.Skip("a 2000-agent storm exceeds the race detector's goroutine limit")
	}
	for _, tc := range []struct {
		name         string
		reads, queue int
	}{{"gate=32+256", 32, 256}, {"gate=off", 4096, 4096}} {
		b.Run(tc.name, func(b *testing.B) {
			var last stormResult
			for b.Loop() {
				last = storm{agents: 2000, entries: 200, reads: tc.reads, queue: tc.queue}.run(b)
			}
			b.ReportMetric(float64(last.peakGrowth)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(last.peakLive)/(1<<20), "peak-live-MiB")
			b.ReportMetric(float64(last.refused), "refusals")
			b.ReportMetric(last.took.Seconds(), "storm-s")
		})
	}
}
