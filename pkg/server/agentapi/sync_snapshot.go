package agentapi

import (
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/entry"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// trackerCatchUp bounds the wait for the change tracker to see the
// revision a resume reads at; with a shared store it may lag the store by
// a watch round trip.
const trackerCatchUp = 2 * time.Second

// start answers the agent's since_revision with a resume when one can be
// trusted, else with a full snapshot.
func (ss *syncStream) start(since int64) error {
	if since == 0 {
		return ss.snapshot(reasonInitial)
	}
	if !ss.s.tracker.resumeSafe(since, ss.c.id.String()) {
		return ss.snapshot(reasonUntracked)
	}
	if err := ss.loadNode(); err != nil {
		return err
	}
	az, azRev, err := ss.s.loadAuthz(ss.ctx, ss.node)
	if err != nil {
		return ss.s.internal(ss.ctx, "load node aliases", err)
	}
	changed, deleted, rev, err := ss.s.store.EntryChangesSince(ss.ctx, since)
	switch {
	case errors.Is(err, store.ErrCompacted):
		return ss.snapshot(reasonCompacted)
	case err != nil:
		return ss.s.internal(ss.ctx, "read entry changes", err)
	case since > rev:
		// The agent holds a revision this store never reached: another
		// store, or one restored from a backup. Only a snapshot is safe.
		return ss.snapshot(reasonUnknown)
	}
	if !ss.s.tracker.waitObserved(ss.ctx, rev, trackerCatchUp) || !ss.s.tracker.resumeSafe(since, ss.c.id.String()) {
		// An alias or node change this server has not seen yet may lie
		// between since and rev (another server wrote it): a snapshot is
		// safe, a resume may not be.
		return ss.snapshot(reasonUntracked)
	}
	if slices.ContainsFunc(changed, func(e *typesv1.Entry) bool { return entry.IsAlias(ss.s.td, e) }) {
		return ss.snapshot(reasonAlias)
	}
	ss.az, ss.floor = az, azRev
	now := ss.s.clock.Now()
	var upserts []*typesv1.Entry
	for _, e := range changed {
		if az.allows(e, now) {
			upserts = append(upserts, e)
			ss.expiry.set(e)
		} else {
			deleted = append(deleted, e.GetId())
		}
	}
	ss.s.metrics.syncSnapshots.WithLabelValues(reasonResume).Inc()
	// Entries were read after the aliases; reporting the earlier revision
	// makes the events in between replay, which converges on the same state.
	return ss.sendPages(pageOpts{done: true, rev: azRev}, upserts, deleted)
}

// loadNode reads the caller's node record again: the snapshot must use the
// selectors as they are now, and the node may have been evicted.
func (ss *syncStream) loadNode() error {
	node, err := ss.s.store.GetNode(ss.ctx, ss.c.id.String())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.PermissionDenied, msgUnknown)
	case err != nil:
		return ss.s.internal(ss.ctx, "load node", err)
	}
	if err := checkNode(node, ss.c.serial); err != nil {
		return err
	}
	ss.node = node
	return nil
}

// snapshot sends every entry authorised for the node, in pages, holding a
// read slot of the sync gate.
func (ss *syncStream) snapshot(reason string) error {
	return ss.gated(func() error { return ss.snapshotNow(reason) })
}

func (ss *syncStream) snapshotNow(reason string) error {
	if err := ss.loadNode(); err != nil {
		return err
	}
	nodeID := ss.node.GetSpiffeId()
	first, rev, err := ss.s.store.ListEntriesByParent(ss.ctx, []string{nodeID, ss.s.serverID})
	if err != nil {
		return ss.s.internal(ss.ctx, "list node entries", err)
	}
	now := ss.s.clock.Now()
	az := newAuthz(ss.s.td, ss.node)
	az.addAliases(first, now)
	entries := slices.DeleteFunc(first, func(e *typesv1.Entry) bool { return e.GetParentId() != nodeID })
	if aliases := az.aliasParents(); len(aliases) > 0 {
		more, _, err := ss.s.store.ListEntriesByParent(ss.ctx, aliases)
		if err != nil {
			return ss.s.internal(ss.ctx, "list alias entries", err)
		}
		entries = append(entries, more...)
		slices.SortFunc(entries, func(a, b *typesv1.Entry) int { return strings.Compare(a.GetId(), b.GetId()) })
	}
	entries = slices.DeleteFunc(entries, func(e *typesv1.Entry) bool { return !az.allows(e, now) })
	ss.az, ss.floor = az, rev
	ss.expiry.reset()
	for _, e := range entries {
		ss.expiry.set(e)
	}
	ss.s.metrics.syncSnapshots.WithLabelValues(reason).Inc()
	ss.log.Debug("sync snapshot", telemetry.Reason, reason, telemetry.Count, len(entries), telemetry.Revision, rev)
	// A snapshot may replace a batch that also held bundle changes, and
	// moves the floor past them: it carries both bundles as they are now.
	bundle, _, err := ss.s.bundles.Current(ss.ctx)
	if err != nil {
		return ss.s.internal(ss.ctx, "read bundle", err)
	}
	return ss.sendPages(pageOpts{reset: true, done: true, rev: rev, bundle: bundle, federated: true}, entries, nil)
}

// pageOpts shape a sequence of pages: reset and bundle go on the first,
// rev and done on the last.
type pageOpts struct {
	reset  bool
	done   bool
	bundle *typesv1.Bundle
	// federated: a federated bundle changed; the first page carries the
	// whole set again.
	federated bool
	rev       int64
}

// sendPages sends upserts and deletes in messages of at most pageSize
// entries and maxSyncMessageBytes. Only the last message carries the
// revision (and done, when it ends a snapshot or resume): an agent that
// stops halfway must not record a revision whose changes it lacks.
func (ss *syncStream) sendPages(o pageOpts, upserts []*typesv1.Entry, deletes []string) error {
	msg := &agentv1.SyncResponse{Reset_: o.reset, Bundle: o.bundle}
	if o.federated || !ss.sentFirst {
		if err := ss.attachFederated(msg); err != nil {
			return err
		}
	}
	// The bundles on the first page count against its budget: a page
	// always carries at least one entry, so large partner bundles push
	// the entries to later pages rather than past the agent's limit.
	size := proto.Size(msg)
	flush := func() error {
		if err := ss.send(msg); err != nil {
			return err
		}
		msg, size = &agentv1.SyncResponse{}, 0
		return nil
	}
	for _, e := range upserts {
		n := proto.Size(e) + 8
		if len(msg.Upserts) > 0 && (len(msg.Upserts) >= ss.pageSize || size+n > maxSyncMessageBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		msg.Upserts = append(msg.Upserts, e)
		size += n
	}
	for _, id := range deletes {
		n := len(id) + 8
		if len(msg.Upserts)+len(msg.DeletedIds) > 0 && size+n > maxSyncMessageBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		msg.DeletedIds = append(msg.DeletedIds, id)
		size += n
	}
	msg.Revision, msg.SnapshotDone = o.rev, o.done
	return ss.send(msg)
}
