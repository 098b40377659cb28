package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// haCluster is three nhid-servers on a three-member etcd cluster, with
// two agents synced through different servers.
type haCluster struct {
	etcd    []*etcdMember
	servers []*server
	bundle  string
	// agents[i] syncs through servers[onServer[i]] at the start.
	agents   []*agent
	onServer []int
	probes   []string // the probe each agent's entries select
	sums     []string
	agentIDs []string
	// acked are the ids of the entries whose creation was acknowledged.
	acked []string
}

func startHACluster(t *testing.T) *haCluster {
	t.Helper()
	c := &haCluster{etcd: startEtcdCluster(t, 3)}
	for range 3 {
		c.servers = append(c.servers, startHAServer(t, c.etcd, "/nhid-e2e/"))
	}
	eventually(t, waitTimeout, "every server's CA in the shared bundle", func() error {
		pem := c.servers[0].mustCtl(t, "bundle", "show", "--format", "pem")
		if n := strings.Count(pem, "BEGIN CERTIFICATE"); n != 3 {
			return fmt.Errorf("the bundle holds %d CAs", n)
		}
		return nil
	})
	c.bundle = c.servers[1].bundlePEM(t)
	// The first agent may reach any server; the second is given the two
	// others, so that the agents sync through different servers.
	before := []float64{0, 0, 0}
	c.addAgent(t, c.servers, before)
	var others []*server
	for i, s := range c.servers {
		if i != c.onServer[0] {
			others = append(others, s)
		}
	}
	before[c.onServer[0]] = 1
	c.addAgent(t, others, before)
	return c
}

func (c *haCluster) addAgent(t *testing.T, servers []*server, before []float64) {
	t.Helper()
	token, agentID := c.servers[0].joinToken(t)
	a := startHAAgent(t, servers, token, c.bundle)
	c.agents, c.agentIDs = append(c.agents, a), append(c.agentIDs, agentID)
	c.onServer = append(c.onServer, syncingServer(t, c.servers, before))
	probe, sum := copyProbe(t, a.dir, "probe", fmt.Sprintf("agent-%d", len(c.agents)))
	c.probes, c.sums = append(c.probes, probe), append(c.sums, sum)
}

// createEntry registers, through s, an entry for agent i's probe.
func (c *haCluster) createEntry(t *testing.T, s *server, i int, name string) (string, error) {
	t.Helper()
	out, err := s.ctl("-o", "json", "entry", "create", "--spiffe-id", "spiffe://"+trustDomain+"/ha/"+name,
		"--parent-id", c.agentIDs[i], "--selector", uidSelector(), "--selector", "unix:sha256:"+c.sums[i])
	if err != nil {
		return "", err
	}
	var created struct {
		Entry struct {
			ID string `json:"id"`
		} `json:"entry"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("entry create printed %q: %v", out, err)
	}
	c.acked = append(c.acked, created.Entry.ID)
	return created.Entry.ID, nil
}

// createRetrying creates an entry through a live server, retrying while
// the servers answer that the store is unavailable, as an operator would.
// An earlier attempt that failed that way may have been applied, which
// the retry then finds.
func (c *haCluster) createRetrying(t *testing.T, i int, name string) {
	t.Helper()
	failures := 0
	eventually(t, waitTimeout, "creating "+name, func() error {
		_, err := c.createEntry(t, c.live(), i, name)
		switch {
		case err == nil:
		case strings.Contains(err.Error(), "nhid-server is unavailable"):
			failures++
		case failures > 0 && strings.Contains(err.Error(), "same spiffe_id"):
			return nil
		default:
			t.Fatalf("creating %s: %v", name, err)
		}
		return err
	})
	t.Logf("%s created after %d unavailable answers", name, failures)
}

func (c *haCluster) mustCreateEntry(t *testing.T, s *server, i int, name string) {
	t.Helper()
	if _, err := c.createEntry(t, s, i, name); err != nil {
		t.Fatal(err)
	}
}

// live is a server that has not been killed.
func (c *haCluster) live() *server {
	for _, s := range c.servers {
		if !s.exited() {
			return s
		}
	}
	return nil
}

func haIDs(name ...string) []string {
	out := make([]string, len(name))
	for i, n := range name {
		out[i] = "spiffe://" + trustDomain + "/ha/" + n
	}
	slices.Sort(out)
	return out
}

func sameIDs(want []string) func(probeResult) bool {
	return func(r probeResult) bool {
		got := slices.Clone(r.SPIFFEIDs)
		slices.Sort(got)
		return slices.Equal(want, got)
	}
}

func TestHA_ServersOnEtcdSurviveServerAndMemberFailures(t *testing.T) {
	c := startHACluster(t)
	a1, a2 := 0, 1
	outer := t

	t.Run("AnEntryCreatedThroughOneServerIsServedByAnAgentOnAnother", func(t *testing.T) {
		c.mustCreateEntry(t, c.servers[c.onServer[a1]], a2, "agent2-first")
		r := fetchEventually(t, c.agents[a2], c.probes[a2], "x509")
		if !sameIDs(haIDs("agent2-first"))(r) {
			t.Fatalf("agent 2 serves %v", r.SPIFFEIDs)
		}
	})
	if t.Failed() {
		return
	}

	var watch *streamWatch
	var firstSerial string
	t.Run("AJoinTokenRacedThroughEveryServerWorksOnce", func(t *testing.T) {
		token, _ := c.servers[0].joinToken(t)
		racers := c.servers
		errs := make([]error, len(racers))
		var wg sync.WaitGroup
		ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
		defer cancel()
		for i, s := range racers {
			wg.Go(func() { _, errs[i] = attest(ctx, t, s, token) })
		}
		wg.Wait()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case status.Code(err) != codes.PermissionDenied:
				t.Errorf("attestation through server %d: %v, want success or PermissionDenied", i, err)
			}
		}
		if ok != 1 {
			t.Errorf("%d of %d racing attestations succeeded, want exactly 1", ok, len(racers))
		}
	})
	if t.Failed() {
		return
	}

	t.Run("KillingTheAgentsServerKeepsItsWorkloadsStreamAndSVID", func(t *testing.T) {
		c.mustCreateEntry(t, c.servers[c.onServer[a1]], a1, "agent1-first")
		fetchEventually(t, c.agents[a1], c.probes[a1], "x509")
		watch = watchStream(outer, c.agents[a1], c.probes[a1]) // it must outlive this step
		first := nextResult(t, watch.updates, waitTimeout, "the first X.509 context", sameIDs(haIDs("agent1-first")))
		firstSerial = first.Serials[0]

		before := []float64{0, 0, 0}
		c.servers[c.onServer[a1]].kill9()
		before[c.onServer[a1]] = 1e9 // dead: never the answer
		before[c.onServer[a2]] = 1
		moved := syncingServer(t, c.servers, before)
		t.Logf("agent 1 moved from server %d to server %d", c.onServer[a1], moved)
		c.mustCreateEntry(t, c.servers[moved], a1, "agent1-after-failover")
		r := nextResult(t, watch.updates, waitTimeout, "the entry created after the failover",
			sameIDs(haIDs("agent1-first", "agent1-after-failover")))
		if i := slices.Index(r.SPIFFEIDs, haIDs("agent1-first")[0]); r.Serials[i] != firstSerial {
			t.Errorf("the workload's SVID changed across the failover: %s, was %s", r.Serials[i], firstSerial)
		}
		if e := watch.errors(); e != "" {
			t.Errorf("the workload's stream broke during the failover: %s", e)
		}
		c.onServer[a1] = moved
	})
	if t.Failed() {
		return
	}

	t.Run("KillingTheMaintenanceLeaderHandsTheJobsToAnother", func(t *testing.T) {
		leader := c.waitOneLeader(t)
		c.servers[leader].kill9()
		// Its lease (3 s here) runs out and the last server takes over;
		// agents that synced through the killed one move too.
		next := c.waitOneLeader(t)
		t.Logf("the maintenance leader moved from server %d to server %d", leader, next)
		for i := range c.agents {
			if r, err := runProbe(t, c.agents[i], c.probes[i], "x509"); err != nil || len(r.SPIFFEIDs) == 0 {
				t.Errorf("agent %d after the leader was killed: %v, %v", i+1, r.SPIFFEIDs, err)
			}
		}
		if e := watch.errors(); e != "" {
			t.Errorf("the workload's stream broke: %s", e)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("KillingOneEtcdMemberChangesNothing", func(t *testing.T) {
		c.etcd[0].kill9()
		// Agents never notice. A write in flight while etcd elects a new
		// leader (if the member led) fails as unavailable, which a client
		// retries; once elected, writes go through.
		r, err := runProbe(t, c.agents[a2], c.probes[a2], "x509")
		if err != nil || !sameIDs(haIDs("agent2-first"))(r) {
			t.Fatalf("agent 2 with a member down: %v, %v", r.SPIFFEIDs, err)
		}
		c.createRetrying(t, a2, "agent2-one-member-down")
		fetchUntil(t, c.agents[a2], c.probes[a2], haIDs("agent2-first", "agent2-one-member-down"))
	})
	if t.Failed() {
		return
	}

	t.Run("LosingQuorumFailsWritesClearlyAndAgentsKeepServing", func(t *testing.T) {
		c.etcd[1].kill9()
		_, err := c.createEntry(t, c.live(), a2, "never")
		if err == nil {
			t.Fatal("an entry was created without an etcd quorum")
		}
		c.acked = c.acked[:len(c.acked)-1]
		if !strings.Contains(err.Error(), "nhid-server is unavailable") || !strings.Contains(err.Error(), "quorum") {
			t.Errorf("write without quorum failed with %v; want unavailability naming the quorum", err)
		}
		r, err := runProbe(t, c.agents[a1], c.probes[a1], "x509")
		if err != nil || !sameIDs(haIDs("agent1-first", "agent1-after-failover"))(r) {
			t.Fatalf("agent 1 without quorum: %v, %v", r.SPIFFEIDs, err)
		}
		if e := watch.errors(); e != "" {
			t.Errorf("the workload's stream broke when quorum was lost: %s", e)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("WhenQuorumReturnsEverythingResumesAndNoAcknowledgedWriteIsLost", func(t *testing.T) {
		for _, m := range c.etcd[:2] {
			m.start(outer) // it must outlive this step
		}
		for _, m := range c.etcd {
			m.waitHealthy(t)
		}
		c.createRetrying(t, a1, "agent1-after-quorum")
		nextResult(t, watch.updates, waitTimeout, "the entry created after quorum returned",
			sameIDs(haIDs("agent1-first", "agent1-after-failover", "agent1-after-quorum")))
		for i, s := range c.servers {
			if s.exited() {
				continue
			}
			var list entryList
			s.ctlJSON(t, &list, "entry", "list")
			var got []string
			for _, e := range list.Entries {
				got = append(got, e.ID)
			}
			for _, id := range c.acked {
				if !slices.Contains(got, id) {
					t.Errorf("server %d lost the acknowledged entry %s", i, id)
				}
			}
		}
		if e := watch.errors(); e != "" {
			t.Errorf("the workload's stream broke: %s", e)
		}
	})

}

// waitOneLeader waits until exactly one live server runs the maintenance
// jobs and returns it.
func (c *haCluster) waitOneLeader(t *testing.T) int {
	t.Helper()
	leader := -1
	eventually(t, 2*waitTimeout, "one maintenance leader among the live servers", func() error {
		leaders := 0
		for i, s := range c.servers {
			if s.exited() {
				continue
			}
			v, err := metric(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.healthPort), "nhid_server_maintenance_leader")
			if err != nil {
				return err
			}
			if v == 1 {
				leaders++
				leader = i
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d leaders", leaders)
		}
		return nil
	})
	return leader
}

// fetchUntil retries the probe until it is served exactly want.
func fetchUntil(t *testing.T, a *agent, probe string, want []string) {
	t.Helper()
	eventually(t, waitTimeout, "the agent serves "+strings.Join(want, ", "), func() error {
		r, err := runProbe(t, a, probe, "x509")
		if err != nil {
			return err
		}
		if !sameIDs(want)(r) {
			return fmt.Errorf("serves %v", r.SPIFFEIDs)
		}
		return nil
	})
}
