package workloadapi

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/selector"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

// testManager is an in-memory Manager, the role pkg/agent's cache plays in
// the agent: it holds real SVIDs and bundles, matches entries to selectors
// by the same rule (every entry selector present), and pushes the full new
// state to every subscription on each change.
type testManager struct {
	t  testing.TB
	ca *testCA

	mu         sync.Mutex
	identities []Identity
	bundle     *spiffebundle.Bundle
	federated  []*spiffebundle.Bundle
	subs       map[*testSub]struct{}
	jwtErr     error
	jwtCalls   int
}

func newTestManager(t testing.TB, ca *testCA) *testManager {
	return &testManager{t: t, ca: ca, bundle: ca.bundle(t), subs: make(map[*testSub]struct{})}
}

// identity mints an X.509-SVID for a new entry with the given selectors.
func (m *testManager) identity(entryID, spiffeID, hint string, sels ...string) Identity {
	m.t.Helper()
	certs, key := m.ca.mintX509(m.t, spiffeID)
	return Identity{
		Entry: &typesv1.Entry{
			Id: entryID, SpiffeId: spiffeID, Hint: hint, Selectors: sels,
			Purpose: "test workload " + entryID,
		},
		Certificates: certs,
		PrivateKey:   key,
	}
}

// setIdentities replaces the identities and notifies every subscriber.
func (m *testManager) setIdentities(ids ...Identity) {
	m.mu.Lock()
	m.identities = ids
	m.mu.Unlock()
	m.publish()
}

// setBundles replaces the bundles and notifies every subscriber.
func (m *testManager) setBundles(own *spiffebundle.Bundle, federated ...*spiffebundle.Bundle) {
	m.mu.Lock()
	m.bundle, m.federated = own, federated
	m.mu.Unlock()
	m.publish()
}

func (m *testManager) setJWTError(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jwtErr = err
}

func (m *testManager) publish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.subs {
		s.push(m.currentLocked(s.sels))
	}
}

func (m *testManager) currentLocked(sels selector.Set) *Update {
	u := &Update{Bundle: m.bundle, FederatedBundles: m.federated}
	for _, id := range m.identities {
		want, err := selector.ParseSet(id.Entry.GetSelectors())
		if err != nil {
			m.t.Errorf("entry %s: %v", id.Entry.GetId(), err)
			continue
		}
		if sels.Includes(want) {
			u.Identities = append(u.Identities, id)
		}
	}
	return u
}

// Current implements Manager.
func (m *testManager) Current(sels selector.Set) *Update {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.currentLocked(sels)
}

// Subscribe implements Manager.
func (m *testManager) Subscribe(sels selector.Set) Subscription {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &testSub{m: m, sels: sels, ch: make(chan *Update, 1)}
	m.subs[s] = struct{}{}
	s.push(m.currentLocked(sels))
	return s
}

// FetchJWTSVID implements Manager with a real ES256 token.
func (m *testManager) FetchJWTSVID(_ context.Context, entry *typesv1.Entry, audience []string) (string, error) {
	m.mu.Lock()
	m.jwtCalls++
	err := m.jwtErr
	m.mu.Unlock()
	if err != nil {
		return "", err
	}
	return m.ca.mintJWT(entry.GetSpiffeId(), audience, entry.GetPurpose(), 5*time.Minute)
}

func (m *testManager) openSubscriptions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.subs)
}

// closeSubscriptions ends every subscription, as a stopping agent does.
func (m *testManager) closeSubscriptions() {
	m.mu.Lock()
	subs := make([]*testSub, 0, len(m.subs))
	for s := range m.subs {
		subs = append(subs, s)
	}
	m.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
}

// waitDrained waits until every subscriber has taken its latest Update.
func (m *testManager) waitDrained(t testing.TB) {
	t.Helper()
	waitFor(t, "subscribers to take their updates", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		for s := range m.subs {
			if len(s.ch) > 0 {
				return false
			}
		}
		return true
	})
}

func (m *testManager) jwtCallCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.jwtCalls
}

// testSub keeps only the newest undelivered Update, as the contract says.
type testSub struct {
	m    *testManager
	sels selector.Set

	mu     sync.Mutex
	ch     chan *Update
	closed bool
}

func (s *testSub) push(u *Update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case <-s.ch:
	default:
	}
	s.ch <- u
}

func (s *testSub) Updates() <-chan *Update { return s.ch }

func (s *testSub) Close() {
	s.m.mu.Lock()
	delete(s.m.subs, s)
	s.m.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
}

// uidAttestor reads the caller's effective uid from /proc, as a minimal
// unix attestor would, and returns unix:uid:<uid>.
type uidAttestor struct {
	calls atomic.Int64
}

func (a *uidAttestor) Attest(_ context.Context, pid int32) (selector.Set, error) {
	a.calls.Add(1)
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return selector.Set{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			fields := strings.Fields(rest)
			if len(fields) < 2 {
				return selector.Set{}, fmt.Errorf("pid %d: malformed Uid line", pid)
			}
			sel, err := selector.New("unix", "uid:"+fields[1])
			if err != nil {
				return selector.Set{}, err
			}
			return selector.NewSet(sel), nil
		}
	}
	return selector.Set{}, fmt.Errorf("pid %d: no Uid line in status", pid)
}

// fixedAttestor returns the same answer for every pid: it stands for an
// attestor reading a recycled pid, or for one that fails.
type fixedAttestor struct {
	sels  selector.Set
	err   error
	calls atomic.Int64
}

func (a *fixedAttestor) Attest(context.Context, int32) (selector.Set, error) {
	a.calls.Add(1)
	return a.sels, a.err
}

// selfSelector is the selector uidAttestor gives this test process.
func selfSelector() string {
	return fmt.Sprintf("unix:uid:%d", os.Geteuid())
}
