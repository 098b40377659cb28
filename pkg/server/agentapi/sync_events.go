package agentapi

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// changeSet collects the effect of a batch of events on the agent's view,
// last change per entry winning, so an id is never both upserted and
// deleted in one message.
type changeSet struct {
	order []string
	ops   map[string]*typesv1.Entry // nil value: delete
}

func (c *changeSet) put(id string, e *typesv1.Entry) {
	if c.ops == nil {
		c.ops = make(map[string]*typesv1.Entry)
	}
	if _, seen := c.ops[id]; !seen {
		c.order = append(c.order, id)
	}
	c.ops[id] = e
}

func (c *changeSet) split() (upserts []*typesv1.Entry, deletes []string) {
	for _, id := range c.order {
		if e := c.ops[id]; e != nil {
			upserts = append(upserts, e)
		} else {
			deletes = append(deletes, id)
		}
	}
	return upserts, deletes
}

// applyEvents forwards a batch of store events: entry changes as upserts
// or deletes, bundle changes as the bundle; a change to an alias of the
// node, or to the node's selectors, replaces it all with a new snapshot.
func (ss *syncStream) applyEvents(batch []store.Event) error {
	var changes changeSet
	var bundle *typesv1.Bundle
	var federated bool
	var lastRev int64
	now := ss.s.clock.Now()
	for _, ev := range batch {
		if ev.Revision <= ss.floor {
			continue
		}
		lastRev = ev.Revision
		switch ev.Kind {
		case store.EventEntry:
			if ss.az.aliasMatches(ev.Entry) || ss.az.aliasMatches(ev.PrevEntry) {
				// Later events of the batch were committed before the
				// snapshot's read, so it covers them.
				return ss.snapshot(reasonAlias)
			}
			ss.entryChange(&changes, ev.Entry, ev.PrevEntry, now)
		case store.EventNode:
			resnap, err := ss.nodeChange(ev.Node, ev.PrevNode)
			if err != nil || resnap {
				if err == nil {
					err = ss.snapshot(reasonNode)
				}
				return err
			}
		case store.EventBundle:
			switch own := ss.s.td.Name(); {
			case ev.Bundle.GetTrustDomain() == own:
				if ev.Bundle.GetSequenceNumber() != ss.bundleSeq {
					bundle = ev.Bundle
				}
			case ev.Bundle != nil || ev.PrevBundle.GetTrustDomain() != own:
				federated = true
			}
		}
	}
	upserts, deletes := changes.split()
	if len(upserts) == 0 && len(deletes) == 0 && bundle == nil && !federated {
		return nil
	}
	return ss.sendPages(pageOpts{bundle: bundle, federated: federated, rev: lastRev}, upserts, deletes)
}

func (ss *syncStream) entryChange(c *changeSet, e, prev *typesv1.Entry, now time.Time) {
	switch {
	case e != nil && ss.az.allows(e, now):
		c.put(e.GetId(), e)
		ss.expiry.set(e)
	case ss.az.underNode(e) || ss.az.underNode(prev):
		// Deleted, moved away, or expired: the agent may hold it.
		id := e.GetId()
		if e == nil {
			id = prev.GetId()
		}
		c.put(id, nil)
		ss.expiry.forget(id)
	}
}

// nodeChange reacts to a change of any node: only the caller's matters. It
// ends the stream when the node may no longer be served, and asks for a
// snapshot when its selectors (hence its aliases) changed.
func (ss *syncStream) nodeChange(cur, prev *typesv1.Node) (resnap bool, err error) {
	id := ss.c.id.String()
	if cur.GetSpiffeId() != id && prev.GetSpiffeId() != id {
		return false, nil
	}
	if cur == nil {
		return false, status.Error(codes.PermissionDenied, msgUnknown)
	}
	if err := checkNode(cur, ss.c.serial); err != nil {
		return false, err
	}
	if nodeSelectorsChanged(ss.node, cur) {
		return true, nil
	}
	ss.node = cur
	return false, nil
}
