package manager

import (
	"bytes"
	"time"

	"github.com/nhid/nhid/pkg/entry"
	"github.com/nhid/nhid/pkg/store/agentcache"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// ApplyEntries applies one synced change: upserts replace entries by id,
// deletedIDs remove them (unknown ids are ignored). Subscriptions see the
// result at once; SVIDs for new or changed entries follow when minted.
// The entries must not be modified afterwards.
func (m *Manager) ApplyEntries(upserts []*typesv1.Entry, deletedIDs []string) {
	now := m.clock.Now()
	m.mu.Lock()
	for _, id := range deletedIDs {
		m.removeLocked(id)
	}
	for _, e := range upserts {
		m.upsertLocked(e, now)
	}
	m.metrics.entries.Set(float64(len(m.entries)))
	m.metrics.svids.Set(float64(m.lru.Len()))
	m.notifyLocked()
	m.mu.Unlock()
	m.kick()
}

// Load restores entries and SVIDs from the agent's cache, before Run.
// SVIDs that expired, no longer match their entry, do not parse or exceed
// the pre-mint bound are dropped from the store. Load returns how many
// SVIDs it kept.
func (m *Manager) Load(st *agentcache.State) int {
	now := m.clock.Now()
	var stale []string
	m.mu.Lock()
	for _, e := range st.Entries {
		m.upsertLocked(e, now)
	}
	for _, c := range st.SVIDs {
		if !m.restoreLocked(c, now) {
			stale = append(stale, c.EntryID)
		}
	}
	kept := m.lru.Len()
	m.metrics.entries.Set(float64(len(m.entries)))
	m.metrics.svids.Set(float64(kept))
	m.notifyLocked()
	m.mu.Unlock()
	m.deleteStored(stale)
	m.kick()
	return kept
}

func (m *Manager) restoreLocked(c agentcache.SVID, now time.Time) bool {
	r := m.entries[c.EntryID]
	if r == nil || !r.served || !bytes.Equal(c.EntryDigest, r.digest) || m.lru.Len() >= m.maxSVID {
		return false
	}
	s, _, err := newSVID(c.CertChain, c.PrivateKey, c.EntryDigest)
	if err != nil {
		m.log.Warn("dropping a cached SVID that does not parse",
			telemetry.EntryID, c.EntryID, telemetry.Error, err)
		return false
	}
	if !now.Before(s.notAfter) {
		return false
	}
	m.installLocked(r, s)
	return true
}

func (m *Manager) upsertLocked(e *typesv1.Entry, now time.Time) {
	r := m.entries[e.GetId()]
	if r == nil {
		r = &record{}
		m.entries[e.GetId()] = r
	} else {
		m.index.remove(r)
	}
	r.entry = e
	r.sels = entry.Selectors(e)
	r.digest = entryDigest(e)
	r.served = !entry.IsAlias(m.td, e) && !entry.Expired(e, now) && r.sels.Len() > 0
	r.retryAt, r.failures = time.Time{}, 0
	if r.served {
		m.index.add(r)
	} else if r.svid != nil {
		m.dropSVIDLocked(r)
	}
}

func (m *Manager) removeLocked(id string) {
	r := m.entries[id]
	if r == nil {
		return
	}
	m.index.remove(r)
	if r.svid != nil {
		m.dropSVIDLocked(r)
	}
	r.served = false
	delete(m.entries, id)
}

// installLocked makes s the record's SVID, as the most recently used.
func (m *Manager) installLocked(r *record, s *svid) {
	m.seq++
	s.seq = m.seq
	r.svid = s
	m.idleLocked(r)
	if r.lru == nil {
		r.lru = m.lru.PushFront(r)
	} else {
		m.lru.MoveToFront(r.lru)
	}
}

func (m *Manager) dropSVIDLocked(r *record) {
	r.svid = nil
	m.unidleLocked(r)
	if r.lru != nil {
		m.lru.Remove(r.lru)
		r.lru = nil
	}
}

// servable reports whether r's SVID may be given to a workload now.
func (r *record) servable(now time.Time) bool {
	return r.served && r.svid != nil && bytes.Equal(r.svid.digest, r.digest) && now.Before(r.svid.notAfter)
}

// deleteStored removes SVIDs from the store; called without m.mu held.
func (m *Manager) deleteStored(ids []string) {
	if m.store == nil || len(ids) == 0 {
		return
	}
	if err := m.store.DeleteSVIDs(ids); err != nil {
		m.log.Error("removing SVIDs from the agent cache failed", telemetry.Count, len(ids), telemetry.Error, err)
	}
}
