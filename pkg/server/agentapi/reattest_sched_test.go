package agentapi

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestScheduler_PopsDueRoundsInTimeOrderAndSkipsEndedStreams(t *testing.T) {
	h := newHarness(t)
	q := newScheduler(h.svc)
	base := time.Now()
	var conns []*reattestConn
	for i := range 1000 {
		c := &reattestConn{nodeID: fmt.Sprint(i), done: make(chan struct{})}
		conns = append(conns, c)
		q.schedule(c, base.Add(time.Duration(rand.IntN(1000))*time.Millisecond))
	}
	conns[3].end(nil)
	due := q.popDue(base.Add(500 * time.Millisecond))
	for _, c := range due {
		if c == conns[3] {
			t.Fatal("popDue returned a round of an ended stream")
		}
	}
	rest := q.popDue(base.Add(time.Hour))
	if got := len(due) + len(rest); got != 999 {
		t.Errorf("%d rounds popped, want 999", got)
	}
	if q.queue.Len() != 0 {
		t.Errorf("%d rounds left queued", q.queue.Len())
	}
}

func TestReattest_ManyConnectedNodesAreAllServed(t *testing.T) {
	h, _ := newReattestHarness(t, nil)
	const nodes = 40
	agents := make([]*agent, nodes)
	streams := make([]*reattestAgent, nodes)
	for i := range nodes {
		agents[i] = h.attestReattesting(fmt.Sprintf("many-%02d", i))
		streams[i] = openReattest(t, agents[i], goodAnswer(fmt.Sprintf("s%02d", i)))
	}
	for i, a := range agents {
		want := fmt.Sprintf("test_reattest:state:s%02d", i)
		waitNode(t, h, a.id, "verified", func(n *typesv1.Node) bool { return slices.Equal(n.GetSelectors(), []string{want}) })
	}
}

// BenchmarkScheduler measures queueing and popping a round per node for
// 100,000 connected nodes: the scheduler's cost per requote interval.
func BenchmarkScheduler(b *testing.B) {
	h := newHarness(b)
	q := newScheduler(h.svc)
	const nodes = 100_000
	conns := make([]*reattestConn, nodes)
	for i := range conns {
		conns[i] = &reattestConn{done: make(chan struct{})}
	}
	base := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		for i, c := range conns {
			q.schedule(c, base.Add(time.Duration(i%600)*time.Second))
		}
		if got := len(q.popDue(base.Add(time.Hour))); got != nodes {
			b.Fatalf("popped %d rounds, want %d", got, nodes)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*nodes), "ns/node")
}
