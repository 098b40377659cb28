package entrysync

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/agent/trust"
	"github.com/nhid/nhid/pkg/entry"
	"github.com/nhid/nhid/pkg/store/agentcache"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// agentLimits accept any TTL the wire can carry: the server enforced its
// own limits, and an agent refusing what its server allowed would only
// strand the workload.
var agentLimits = entry.Limits{
	MinX509TTL: time.Second, MaxX509TTL: (1<<31 - 1) * time.Second,
	MinJWTTTL: time.Second, MaxJWTTTL: (1<<31 - 1) * time.Second,
}

// applied is what one Sync message changes: change for the cache, and
// upserts and deleted for the manager (the same, unless the cache is
// being rewritten whole).
type applied struct {
	change  agentcache.Change
	upserts []*typesv1.Entry
	deleted []string
	bundle  *spiffebundle.Bundle
	// federated, when federatedSet, is the complete set of federated
	// bundles to hand to the manager.
	federated    []*spiffebundle.Bundle
	federatedSet bool
	// done is set once a snapshot or resume is complete.
	done bool
}

// applier turns Sync messages into changes. A snapshot (reset, pages,
// snapshot_done) is gathered in memory and applied as one change when its
// last page arrives, as the difference from what the agent holds: the
// cache moves from one consistent revision to the next, workloads never
// see a half-received snapshot, and SVIDs of unchanged entries are kept.
type applier struct {
	td  spiffeid.TrustDomain
	log *slog.Logger
	// held maps the id of every entry the agent holds to its revision.
	held map[string]int64
	// pending gathers a snapshot in progress; nil outside one.
	pending  map[string]*typesv1.Entry
	revision int64
	// dirty is set when a cache write failed: the file may lag behind
	// memory, so the next snapshot rewrites it whole.
	dirty bool
}

func newApplier(td spiffeid.TrustDomain, log *slog.Logger, st *agentcache.State) *applier {
	a := &applier{td: td, log: log, held: make(map[string]int64)}
	if st != nil {
		a.revision = st.Revision
		for _, e := range st.Entries {
			a.held[e.GetId()] = e.GetRevision()
		}
	}
	return a
}

// restart forgets a snapshot cut short by a broken stream.
func (a *applier) restart() { a.pending = nil }

// apply computes the change msg makes. A message with a bad own bundle is
// refused whole; a bad federated bundle or a bad entry is logged and
// dropped (an entry the agent held in an earlier version is deleted) so
// one bad record, or one partner's, cannot stall the sync.
func (a *applier) apply(msg *agentv1.SyncResponse) (applied, error) {
	var out applied
	if msg.GetRevision() < 0 {
		return out, fmt.Errorf("sync message: revision %d is negative", msg.GetRevision())
	}
	if msg.GetBundle() != nil {
		b, err := trust.FromProto(a.td, msg.GetBundle())
		if err != nil {
			return out, fmt.Errorf("sync message: %w", err)
		}
		out.bundle, out.change.Bundle = b, msg.GetBundle()
	}
	if msg.GetFederatedBundlesSet() {
		fed, kept := a.federated(msg.GetFederatedBundles())
		out.federated, out.federatedSet = fed, true
		out.change.FederatedBundlesSet, out.change.FederatedBundles = true, kept
	}
	upserts, deleted := a.validEntries(msg)
	if msg.GetReset_() {
		a.pending = make(map[string]*typesv1.Entry)
	}
	if a.pending == nil {
		out.upserts, out.deleted = upserts, deleted
		out.change.Upserts, out.change.DeletedIDs = upserts, deleted
		out.change.Revision = msg.GetRevision()
		a.commit(out)
		out.done = msg.GetSnapshotDone()
		return out, nil
	}
	for _, e := range upserts {
		a.pending[e.GetId()] = e
	}
	for _, id := range deleted {
		delete(a.pending, id)
	}
	if !msg.GetSnapshotDone() {
		return out, nil
	}
	out.upserts, out.deleted = a.diff()
	out.change.Upserts, out.change.DeletedIDs = out.upserts, out.deleted
	if a.dirty {
		out.change.Reset, out.change.DeletedIDs = true, nil
		out.change.Upserts = make([]*typesv1.Entry, 0, len(a.pending))
		for _, e := range a.pending {
			out.change.Upserts = append(out.change.Upserts, e)
		}
	}
	out.change.Revision = msg.GetRevision()
	a.pending = nil
	a.commit(out)
	out.done = true
	return out, nil
}

// federated checks a complete set of federated bundles and returns it
// converted and in wire form. A bundle claiming the agent's own trust
// domain is ignored (federation must never replace the agent's own
// roots), as are one that does not convert and a repeated trust domain:
// each is logged, and the partners' other bundles still go through.
func (a *applier) federated(in []*typesv1.Bundle) ([]*spiffebundle.Bundle, []*typesv1.Bundle) {
	out := make([]*spiffebundle.Bundle, 0, len(in))
	kept := make([]*typesv1.Bundle, 0, len(in))
	seen := make(map[string]int, len(in))
	for i, pb := range in {
		b, err := trust.FederatedFromProto(a.td, pb)
		if errors.Is(err, trust.ErrOwnTrustDomain) {
			a.log.Warn("ignoring a federated bundle from the server that claims the agent's own trust domain",
				"field", fmt.Sprintf("federated_bundles[%d]", i), telemetry.TrustDomain, a.td.Name())
			continue
		}
		if err != nil {
			a.log.Warn("ignoring a federated bundle from the server that does not convert",
				"field", fmt.Sprintf("federated_bundles[%d]", i), telemetry.TrustDomain, pb.GetTrustDomain(), telemetry.Error, err.Error())
			continue
		}
		name := b.TrustDomain().Name()
		if j, dup := seen[name]; dup {
			a.log.Warn("ignoring a repeated federated bundle from the server",
				"field", fmt.Sprintf("federated_bundles[%d]", i), telemetry.TrustDomain, name, "first", fmt.Sprintf("federated_bundles[%d]", j))
			continue
		}
		seen[name] = i
		out, kept = append(out, b), append(kept, pb)
	}
	return out, kept
}

// validEntries splits msg's entries into valid upserts and ids to delete,
// which include the ids of invalid entries.
func (a *applier) validEntries(msg *agentv1.SyncResponse) ([]*typesv1.Entry, []string) {
	upserts := make([]*typesv1.Entry, 0, len(msg.GetUpserts()))
	deleted := make([]string, 0, len(msg.GetDeletedIds()))
	for i, e := range msg.GetUpserts() {
		if err := entry.Validate(a.td, e, agentLimits); err != nil {
			a.log.Warn("ignoring an invalid entry from the server",
				telemetry.EntryID, e.GetId(), "field", fmt.Sprintf("upserts[%d]", i), telemetry.Error, err)
			if e.GetId() != "" {
				deleted = append(deleted, e.GetId())
			}
			continue
		}
		upserts = append(upserts, e)
	}
	for i, id := range msg.GetDeletedIds() {
		if id == "" {
			a.log.Warn("ignoring an empty deleted id from the server", "field", fmt.Sprintf("deleted_ids[%d]", i))
			continue
		}
		deleted = append(deleted, id)
	}
	return upserts, deleted
}

// diff compares a finished snapshot with what is held.
func (a *applier) diff() (upserts []*typesv1.Entry, deleted []string) {
	for id, e := range a.pending {
		if rev, ok := a.held[id]; !ok || rev != e.GetRevision() {
			upserts = append(upserts, e)
		}
	}
	for id := range a.held {
		if _, ok := a.pending[id]; !ok {
			deleted = append(deleted, id)
		}
	}
	return upserts, deleted
}

// commit records what the agent holds once out is applied.
func (a *applier) commit(out applied) {
	for _, id := range out.deleted {
		delete(a.held, id)
	}
	for _, e := range out.upserts {
		a.held[e.GetId()] = e.GetRevision()
	}
	if out.change.Revision != 0 {
		a.revision = out.change.Revision
	}
}

// persisted records the outcome of writing a change to the cache.
func (a *applier) persisted(ch agentcache.Change, err error) {
	switch {
	case err != nil:
		a.dirty = true
	case ch.Reset:
		a.dirty = false
	}
}

// sinceRevision is the revision to resume from: none when the cache may
// lag behind, so that a full snapshot rewrites it.
func (a *applier) sinceRevision() int64 {
	if a.dirty {
		return 0
	}
	return a.revision
}
