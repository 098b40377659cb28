package etcd

import (
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// decodeEvents turns the etcd events of one watch response into store
// events, in sync revision order. A record that does not decode is logged
// and skipped: it cannot be delivered, and stopping every watcher for it
// would stop every agent's sync.
func (s *Store) decodeEvents(evs []*clientv3.Event) []store.Event {
	out := make([]store.Event, 0, len(evs))
	for _, ev := range evs {
		e, ok, err := s.decodeEvent(ev)
		if err != nil {
			s.log.Error("etcd store watch: undecodable record skipped", telemetry.Path, string(ev.Kv.Key), telemetry.Error, err.Error())
			continue
		}
		if ok {
			out = append(out, e)
		}
	}
	// etcd delivers a transaction's changes in the order it made them; a
	// stable sort by revision keeps that promise whatever the order.
	slices.SortStableFunc(out, func(a, b store.Event) int { return cmpInt(a.Revision, b.Revision) })
	return out
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// decodeEvent decodes one etcd event; ok is false for changes that are
// not store events (pruned grants).
func (s *Store) decodeEvent(ev *clientv3.Event) (store.Event, bool, error) {
	key := strings.TrimPrefix(string(ev.Kv.Key), s.keys.prefix)
	del := ev.Type == mvccpb.DELETE
	delRev := syncRevision(ev.Kv.ModRevision, 0)
	switch {
	case strings.HasPrefix(key, prefixEntries):
		out := store.Event{Kind: store.EventEntry, Revision: delRev}
		var err error
		if !del {
			if out.Entry, err = decodeEntry(ev.Kv); err != nil {
				return out, false, err
			}
			out.Revision = out.Entry.Revision
		}
		if ev.PrevKv != nil {
			out.PrevEntry, err = decodeEntry(ev.PrevKv)
		}
		return out, true, err
	case strings.HasPrefix(key, prefixNodes):
		out := store.Event{Kind: store.EventNode, Revision: delRev}
		var err error
		if !del {
			if out.Node, err = decodeNode(ev.Kv); err != nil {
				return out, false, err
			}
		}
		if ev.PrevKv != nil {
			out.PrevNode, err = decodeNode(ev.PrevKv)
		}
		return out, true, err
	case strings.HasPrefix(key, prefixBundles):
		out := store.Event{Kind: store.EventBundle, Revision: delRev}
		kv := ev.Kv
		if del {
			if ev.PrevKv == nil {
				// The previous value is gone (compacted): the key still
				// names the trust domain, which is what watchers need.
				out.PrevBundle = &typesv1.Bundle{TrustDomain: strings.TrimPrefix(key, prefixBundles)}
				return out, true, nil
			}
			kv = ev.PrevKv
		}
		b := &typesv1.Bundle{}
		if err := proto.Unmarshal(kv.Value, b); err != nil {
			return store.Event{}, false, fmt.Errorf("decode bundle: %w", err)
		}
		if del {
			out.PrevBundle = b
		} else {
			out.Bundle = b
		}
		return out, true, nil
	case strings.HasPrefix(key, prefixGrants) && !del:
		return grantEvent(ev)
	}
	return store.Event{}, false, nil
}

// grantEvent decodes a grant change; its revision is the grant's own.
func grantEvent(ev *clientv3.Event) (store.Event, bool, error) {
	g, err := decodeGrant(ev.Kv)
	if err != nil {
		return store.Event{}, false, err
	}
	out := store.Event{Kind: store.EventGrant, Revision: g.Revision, Grant: g}
	if ev.PrevKv != nil {
		if out.PrevGrant, err = decodeGrant(ev.PrevKv); err != nil {
			return store.Event{}, false, err
		}
	}
	return out, true, nil
}
