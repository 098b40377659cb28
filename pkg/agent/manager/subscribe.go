package manager

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/nhid/nhid/pkg/workloadapi"
)

// subscription follows the identities of one selector set. Its fields are
// guarded by Manager.mu, which also serialises every send on ch.
type subscription struct {
	m       *Manager
	sels    selector.Set
	ch      chan *workloadapi.Update
	matched map[*record]struct{}
	// key identifies the content of the last Update sent; sent says
	// whether one was.
	key    string
	sent   bool
	closed bool
	once   sync.Once
}

// Subscribe follows the identities matching sels. The first Update comes
// at once when the matching entries' SVIDs are ready; when some must first
// be minted (on demand, or because their entry changed), Updates wait for
// that attempt, successful or not. Nothing is sent until the trust bundle
// is known.
func (m *Manager) Subscribe(sels selector.Set) workloadapi.Subscription {
	s := &subscription{
		m:       m,
		sels:    sels,
		ch:      make(chan *workloadapi.Update, 1),
		matched: make(map[*record]struct{}),
	}
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.metrics.subs.Set(float64(len(m.subs)))
	pending := m.refreshLocked(s, m.clock.Now())
	m.mu.Unlock()
	// Run plans over every entry under m.mu: it is woken only when this
	// subscription waits for an SVID, not for every workload connecting.
	if pending {
		m.kick()
	}
	return s
}

// Updates implements workloadapi.Subscription.
func (s *subscription) Updates() <-chan *workloadapi.Update { return s.ch }

// Close implements workloadapi.Subscription. It may be called more than
// once.
func (s *subscription) Close() {
	s.once.Do(func() {
		m := s.m
		m.mu.Lock()
		defer m.mu.Unlock()
		s.closed = true
		delete(m.subs, s)
		for r := range s.matched {
			m.unpinLocked(r)
		}
		s.matched = nil
		m.metrics.subs.Set(float64(len(m.subs)))
		close(s.ch)
	})
}

// notifyLocked brings every subscription up to date; those whose content
// did not change get nothing.
func (m *Manager) notifyLocked() {
	now := m.clock.Now()
	for s := range m.subs {
		m.refreshLocked(s, now)
	}
}

// refreshLocked recomputes what s matches, pins it, asks for SVIDs that
// are missing, and sends an Update if its content changed. It reports
// whether the Update waits for an SVID being minted or asked for.
func (m *Manager) refreshLocked(s *subscription, now time.Time) bool {
	recs := m.index.match(s.sels)
	matched := make(map[*record]struct{}, len(recs))
	ready := make([]*record, 0, len(recs))
	pending := false
	for _, r := range recs {
		matched[r] = struct{}{}
		if _, ok := s.matched[r]; !ok {
			m.pinLocked(r)
		}
		if r.servable(now) {
			ready = append(ready, r)
		} else if m.awaitMintLocked(r, now) {
			pending = true
		}
	}
	for r := range s.matched {
		if _, ok := matched[r]; !ok {
			m.unpinLocked(r)
		}
	}
	s.matched = matched
	// While an SVID is being minted for a matched entry (new, or changed
	// under its SVID), the Update waits for that attempt: sending without
	// the identity would tell the workload it was withdrawn, and the
	// Workload API would end its stream.
	if m.bundle == nil || pending {
		return pending
	}
	slices.SortFunc(ready, func(a, b *record) int { return strings.Compare(a.entry.GetId(), b.entry.GetId()) })
	feds := m.federatedForLocked(recs)
	key := m.updateKey(ready, feds)
	if s.sent && key == s.key {
		return false
	}
	u := m.buildUpdateLocked(ready, feds)
	select {
	case <-s.ch: // a slow reader skips to the newest state
	default:
	}
	s.ch <- u
	s.key, s.sent = key, true
	m.metrics.updates.Inc()
	m.metrics.x509Served.Add(float64(len(u.Identities)))
	return false
}

// awaitMintLocked reports whether an SVID for r, which has none it may
// serve, is being minted or about to be, asking for one if needed. After a
// failed attempt, or while the server is failing, it is not waited for.
func (m *Manager) awaitMintLocked(r *record, now time.Time) bool {
	if r.minting || r.demand {
		return true
	}
	if r.failures > 0 || now.Before(m.backoffUntil) {
		return false
	}
	r.demand = true
	return true
}

func (m *Manager) pinLocked(r *record) {
	r.pins++
	m.unidleLocked(r)
}

// unpinLocked releases one subscription's hold on r. An SVID nobody holds
// any more keeps its parsed form among the most recently served idle ones.
func (m *Manager) unpinLocked(r *record) {
	r.pins--
	if r.pins == 0 {
		m.idleLocked(r)
	}
}

// idleLocked records that r's parsed SVID, which no subscription pins, was
// just used, and drops the parsed forms of the least recently used idle
// SVIDs beyond the bound (maxIdleParsed).
func (m *Manager) idleLocked(r *record) {
	if r.pins > 0 || r.svid == nil || r.svid.parsed == nil {
		m.unidleLocked(r)
		return
	}
	if r.idle != nil {
		m.idle.MoveToFront(r.idle)
	} else {
		r.idle = m.idle.PushFront(r)
	}
	for m.idle.Len() > m.maxIdle {
		oldest := m.idle.Back().Value.(*record)
		oldest.svid.parsed = nil
		m.unidleLocked(oldest)
	}
}

// unidleLocked takes r out of the idle set, if it is there.
func (m *Manager) unidleLocked(r *record) {
	if r.idle != nil {
		m.idle.Remove(r.idle)
		r.idle = nil
	}
}

// updateKey identifies an Update's content: the bundle, the federated
// bundles, and per identity its entry revision and its SVID.
func (m *Manager) updateKey(ready []*record, feds []fedBundle) string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(m.bundleGen, 10))
	writeFederatedKey(&b, feds)
	for _, r := range ready {
		b.WriteByte('|')
		b.WriteString(r.entry.GetId())
		b.WriteByte('@')
		b.WriteString(strconv.FormatInt(r.entry.GetRevision(), 10))
		b.WriteByte('#')
		b.WriteString(strconv.FormatUint(r.svid.seq, 10))
	}
	return b.String()
}

// buildUpdateLocked turns ready records (ordered by id) and federated
// bundles into an Update, marking the SVIDs as recently used. Parsed forms
// are kept: pinned ones for the subscriptions' next Updates, the others as
// idle.
func (m *Manager) buildUpdateLocked(ready []*record, feds []fedBundle) *workloadapi.Update {
	u := &workloadapi.Update{
		Bundle:           m.bundle,
		FederatedBundles: federatedBundles(feds),
		Identities:       make([]workloadapi.Identity, 0, len(ready)),
	}
	for _, r := range ready {
		p := r.svid.parsed
		if p == nil {
			var err error
			if p, err = parseSVID(r.svid.chain, r.svid.key); err != nil {
				// Checked when minted or loaded, so this means memory
				// corruption or a bug; the identity is left out.
				m.log.Error("held SVID does not parse", telemetry.EntryID, r.entry.GetId(), telemetry.Error, err)
				continue
			}
			r.svid.parsed = p
		}
		if r.pins == 0 {
			m.idleLocked(r)
		}
		m.lru.MoveToFront(r.lru)
		u.Identities = append(u.Identities, workloadapi.Identity{
			Entry:        r.entry,
			Certificates: p.certs,
			PrivateKey:   p.key,
		})
	}
	return u
}

// Current returns the state for sels now. When matching entries have no
// SVID, it asks for them and waits (up to about the mint timeout) for
// that attempt, so a workload whose SVID was not pre-minted is served.
func (m *Manager) Current(sels selector.Set) *workloadapi.Update {
	deadline := time.Now().Add(mintTimeout + time.Second)
	asked := false
	for {
		now := m.clock.Now()
		m.mu.Lock()
		recs := m.index.match(sels)
		ready := make([]*record, 0, len(recs))
		pending := false
		for _, r := range recs {
			switch {
			case r.servable(now):
				ready = append(ready, r)
			case !asked:
				pending = m.awaitMintLocked(r, now) || pending
			case r.demand || r.minting:
				pending = true
			}
		}
		if !pending || time.Now().After(deadline) {
			slices.SortFunc(ready, func(a, b *record) int { return strings.Compare(a.entry.GetId(), b.entry.GetId()) })
			u := m.buildUpdateLocked(ready, m.federatedForLocked(recs))
			m.mu.Unlock()
			return u
		}
		wait := m.attempted
		m.mu.Unlock()
		asked = true
		m.kick()
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-wait:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// CloseSubscriptions ends every open subscription, for shutdown: streams
// following them finish and their clients reconnect elsewhere or later.
func (m *Manager) CloseSubscriptions() {
	m.mu.Lock()
	subs := make([]*subscription, 0, len(m.subs))
	for s := range m.subs {
		subs = append(subs, s)
	}
	m.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
}
