package manager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nhid/nhid/pkg/agent/keys"
	"github.com/nhid/nhid/pkg/entry"
	"github.com/nhid/nhid/pkg/store/agentcache"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Mint priorities, most urgent first.
const (
	prioDemand  = iota // a workload is waiting for it
	prioStale          // the entry changed under its SVID
	prioPreMint        // no SVID yet, nobody waiting
	prioRotate         // past its rotation point
)

// mintJob is one CSR in a batch.
type mintJob struct {
	r      *record
	id     string
	entry  *typesv1.Entry
	digest []byte
	keyDER []byte
	prio   int
	due    time.Time
}

// plan expires what has expired and picks the next batch to mint. It also
// returns when to look again and the SVIDs to remove from the store.
func (m *Manager) plan() (batch []*mintJob, next time.Time) {
	now := m.clock.Now()
	var drop []string
	defer func() { m.deleteStored(drop) }()
	m.mu.Lock()
	defer m.mu.Unlock()

	changed := false
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	var cands []*mintJob
	free := m.maxSVID - m.lru.Len()
	var lag time.Duration
	for id, r := range m.entries {
		withdrawn, dropped := m.expireLocked(r, now, earliest)
		changed = changed || withdrawn || dropped
		if dropped {
			drop = append(drop, id)
		}
		if r.svid != nil && !now.Before(r.svid.rotateAt) {
			lag = max(lag, now.Sub(r.svid.rotateAt))
		}
		if !r.served || r.minting {
			continue
		}
		if now.Before(r.retryAt) {
			earliest(r.retryAt)
			continue
		}
		prio, ok := m.mintPriority(r, now)
		if !ok {
			if r.svid != nil {
				earliest(r.svid.rotateAt)
			}
			continue
		}
		cands = append(cands, &mintJob{r: r, id: id, prio: prio, due: dueOf(r)})
	}
	m.metrics.rotationLag.Set(lag.Seconds())
	if changed {
		m.metrics.svids.Set(float64(m.lru.Len()))
		m.notifyLocked()
	}
	if now.Before(m.backoffUntil) {
		earliest(m.backoffUntil)
		return nil, next
	}
	batch = m.pickLocked(cands, free)
	return batch, next
}

// expireLocked withdraws an entry past its expires_at and drops an SVID
// past its NotAfter or of a withdrawn entry.
func (m *Manager) expireLocked(r *record, now time.Time, earliest func(time.Time)) (withdrawn, dropped bool) {
	if r.served && entry.Expired(r.entry, now) {
		r.served, withdrawn = false, true
		m.index.remove(r)
	} else if exp := r.entry.GetExpiresAt(); r.served && exp != 0 {
		earliest(time.Unix(exp, 0))
	}
	if r.svid == nil {
		return withdrawn, false
	}
	if !r.served || !now.Before(r.svid.notAfter) {
		m.dropSVIDLocked(r)
		return withdrawn, true
	}
	earliest(r.svid.notAfter)
	return withdrawn, false
}

// mintPriority says whether r needs an SVID now, and how urgently.
func (m *Manager) mintPriority(r *record, now time.Time) (int, bool) {
	wanted := r.demand || r.pins > 0
	switch {
	case r.svid == nil && wanted:
		return prioDemand, true
	case r.svid == nil:
		return prioPreMint, true
	case !bytes.Equal(r.svid.digest, r.digest) && wanted:
		return prioDemand, true
	case !bytes.Equal(r.svid.digest, r.digest):
		return prioStale, true
	case !now.Before(r.svid.rotateAt):
		return prioRotate, true
	}
	return 0, false
}

func dueOf(r *record) time.Time {
	if r.svid != nil {
		return r.svid.rotateAt
	}
	return time.Time{}
}

// pickLocked takes up to MaxBatch candidates, most urgent first. New
// SVIDs nobody waits for are only minted while under the pre-mint bound.
func (m *Manager) pickLocked(cands []*mintJob, free int) []*mintJob {
	slices.SortFunc(cands, func(a, b *mintJob) int {
		if a.prio != b.prio {
			return a.prio - b.prio
		}
		if c := a.due.Compare(b.due); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	batch := make([]*mintJob, 0, min(len(cands), MaxBatch))
	for _, j := range cands {
		if len(batch) == MaxBatch {
			break
		}
		if j.prio == prioPreMint {
			if free <= 0 {
				continue
			}
			free--
		}
		j.entry, j.digest = j.r.entry, j.r.digest
		j.r.minting = true
		batch = append(batch, j)
	}
	return batch
}

// mintBatch generates keys, asks the server to sign them and installs the
// results.
func (m *Manager) mintBatch(ctx context.Context, batch []*mintJob) {
	params := make([]*agentv1.X509SVIDParams, 0, len(batch))
	for _, j := range batch {
		key, err := keys.Generate(m.keyType)
		if err == nil {
			j.keyDER, err = keys.MarshalPKCS8(key)
		}
		var csr []byte
		if err == nil {
			csr, err = keys.CSR(key)
		}
		if err != nil {
			m.batchFailed(ctx, batch, err)
			return
		}
		params = append(params, &agentv1.X509SVIDParams{EntryId: j.id, Csr: csr})
	}
	cctx, cancel := context.WithTimeout(ctx, mintTimeout)
	resp, err := m.minter.MintX509SVIDs(cctx, &agentv1.MintX509SVIDsRequest{Params: params})
	cancel()
	if err == nil {
		err = checkResults(resp, params)
	}
	if err != nil {
		m.batchFailed(ctx, batch, err)
		return
	}
	m.install(batch, resp.GetResults())
}

func checkResults(resp *agentv1.MintX509SVIDsResponse, params []*agentv1.X509SVIDParams) error {
	if got := len(resp.GetResults()); got != len(params) {
		return fmt.Errorf("mint response: %d results for %d requests", got, len(params))
	}
	for i, r := range resp.GetResults() {
		if r.GetEntryId() != params[i].GetEntryId() {
			return fmt.Errorf("mint response: results[%d].entry_id %q, want %q", i, r.GetEntryId(), params[i].GetEntryId())
		}
	}
	return nil
}

func (m *Manager) batchFailed(ctx context.Context, batch []*mintJob, err error) {
	now := m.clock.Now()
	m.mu.Lock()
	for _, j := range batch {
		j.r.minting, j.r.demand = false, false
	}
	m.failures++
	wait := backoff(m.failures)
	m.backoffUntil = now.Add(wait)
	m.metrics.x509Failures.Add(float64(len(batch)))
	m.attemptedLocked()
	m.mu.Unlock()
	if ctx.Err() == nil {
		m.log.Warn("minting X.509-SVIDs failed; will retry",
			telemetry.Count, len(batch), "retry_in", wait.Round(time.Millisecond), telemetry.Error, err)
	}
}

// install puts minted SVIDs in place, persists them and tells the
// subscriptions.
func (m *Manager) install(batch []*mintJob, results []*agentv1.X509SVIDResult) {
	now := m.clock.Now()
	var toStore []agentcache.SVID
	m.mu.Lock()
	bundle := m.bundle
	for i, j := range batch {
		j.r.minting, j.r.demand = false, false
		s, p, err := checkMinted(j, results[i], bundle, now)
		if err != nil {
			j.r.failures++
			j.r.retryAt = now.Add(backoff(j.r.failures))
			m.metrics.x509Failures.Inc()
			m.log.Warn("server did not issue an X.509-SVID; will retry",
				telemetry.EntryID, j.id, telemetry.SPIFFEID, j.entry.GetSpiffeId(), telemetry.Error, err)
			continue
		}
		j.r.failures = 0
		m.metrics.x509Minted.Inc()
		// The entry may have changed or gone while the CSR was out; such
		// an SVID describes nothing current and is thrown away.
		if m.entries[j.id] != j.r || !j.r.served || !bytes.Equal(j.r.digest, j.digest) {
			continue
		}
		// An SVID whose rotation point has passed already (a server capping
		// lifetimes to a CA about to expire) would otherwise be minted
		// again in a tight loop.
		s.rotateAt = later(s.rotateAt, now.Add(minRotateGap))
		// A rotated SVID stays parsed if its predecessor was: held by
		// a subscription, or served recently (idle).
		if j.r.pins > 0 || j.r.idle != nil {
			s.parsed = p
		}
		m.installLocked(j.r, s)
		toStore = append(toStore, agentcache.SVID{EntryID: j.id, CertChain: s.chain, PrivateKey: s.key, EntryDigest: s.digest})
	}
	evicted := m.enforceBoundLocked()
	m.failures, m.backoffUntil = 0, time.Time{}
	m.metrics.svids.Set(float64(m.lru.Len()))
	m.attemptedLocked()
	m.notifyLocked()
	m.mu.Unlock()
	m.putStored(toStore)
	m.deleteStored(evicted)
}

// checkMinted verifies a result: issued, parseable, for the entry's SPIFFE
// ID, for the key sent, chaining to the bundle, and not yet expired.
func checkMinted(j *mintJob, res *agentv1.X509SVIDResult, bundle *spiffebundle.Bundle, now time.Time) (*svid, *parsedSVID, error) {
	if res.GetCode() != 0 {
		return nil, nil, fmt.Errorf("code %d: %s", res.GetCode(), res.GetMessage())
	}
	s, p, err := newSVID(res.GetSvidChain(), j.keyDER, j.digest)
	if err != nil {
		return nil, nil, err
	}
	id, err := x509svid.IDFromCert(p.certs[0])
	if err != nil {
		return nil, nil, fmt.Errorf("svid_chain[0]: %w", err)
	}
	if id.String() != j.entry.GetSpiffeId() {
		return nil, nil, fmt.Errorf("svid_chain[0]: SPIFFE ID %s, want %s", id, j.entry.GetSpiffeId())
	}
	if bundle != nil {
		if _, _, err := x509svid.Verify(p.certs, bundle.X509Bundle(), x509svid.WithTime(now)); err != nil {
			return nil, nil, fmt.Errorf("svid_chain: %w", err)
		}
	}
	if !now.Before(s.notAfter) {
		return nil, nil, errors.New("svid_chain[0]: already expired")
	}
	return s, p, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// enforceBoundLocked drops least recently used SVIDs beyond the bound,
// sparing those a workload holds or waits for. It returns the entry ids of
// the SVIDs dropped.
func (m *Manager) enforceBoundLocked() []string {
	var dropped []string
	for e := m.lru.Back(); e != nil && m.lru.Len() > m.maxSVID; {
		r := e.Value.(*record)
		e = e.Prev()
		if r.pins > 0 || r.demand {
			continue
		}
		m.dropSVIDLocked(r)
		dropped = append(dropped, r.entry.GetId())
	}
	return dropped
}

func (m *Manager) putStored(svids []agentcache.SVID) {
	if m.store == nil || len(svids) == 0 {
		return
	}
	if _, err := m.store.PutSVIDs(svids); err != nil {
		m.log.Error("persisting SVIDs to the agent cache failed; they are served from memory",
			telemetry.Count, len(svids), telemetry.Error, err)
	}
}

// attemptedLocked wakes everyone waiting for a mint attempt to finish.
func (m *Manager) attemptedLocked() {
	close(m.attempted)
	m.attempted = make(chan struct{})
}

// backoff is the wait after n consecutive failures: exponential from
// minBackoff to maxBackoff, with ±20% jitter so that agents do not retry
// in lockstep.
func backoff(n int) time.Duration {
	d := minBackoff
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
