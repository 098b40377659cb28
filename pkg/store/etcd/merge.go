package etcd

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// orderMerge walks several index ranges of grant order keys at one
// revision and yields their keys merged in ascending order (newest grant
// first), a page at a time from each range.
type orderMerge struct {
	s       *Store
	streams []*orderStream
	rev     int64
	chunk   int64
}

// orderStream is one index range: the order keys fetched but not yet
// yielded, and where the next fetch starts.
type orderStream struct {
	prefix, start, end string
	buf                []string
	done               bool
}

// newOrderMerge starts each prefix's range after the order key after
// ("" for the start); chunk is how many keys to fetch and yield at a time.
func (s *Store) newOrderMerge(prefixes []string, after string, rev, chunk int64) *orderMerge {
	if chunk <= 0 || chunk > rangePage {
		chunk = rangePage
	}
	m := &orderMerge{s: s, rev: rev, chunk: max(chunk, 64)}
	for _, p := range prefixes {
		start := p
		if after != "" {
			start = p + afterKey(after)
		}
		m.streams = append(m.streams, &orderStream{prefix: p, start: start, end: prefixEnd(p)})
	}
	return m
}

// take returns up to chunk order keys, smallest first; none at the end.
func (m *orderMerge) take(ctx context.Context, op string) ([]string, error) {
	var out []string
	for int64(len(out)) < m.chunk {
		var top *orderStream
		for _, st := range m.streams {
			if err := m.fill(ctx, op, st); err != nil {
				return nil, err
			}
			if len(st.buf) > 0 && (top == nil || st.buf[0] < top.buf[0]) {
				top = st
			}
		}
		if top == nil {
			break
		}
		out = append(out, top.buf[0])
		top.buf = top.buf[1:]
	}
	return out, nil
}

// fill fetches the next page of st once it has yielded everything.
func (m *orderMerge) fill(ctx context.Context, op string, st *orderStream) error {
	if len(st.buf) > 0 || st.done {
		return nil
	}
	resp, err := m.s.getAt(ctx, op, st.start, m.rev, clientv3.WithRange(st.end),
		clientv3.WithKeysOnly(), clientv3.WithLimit(m.chunk))
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		st.buf = append(st.buf, string(kv.Key[len(st.prefix):]))
	}
	st.done = !resp.More
	if n := len(resp.Kvs); n > 0 {
		st.start = afterKey(string(resp.Kvs[n-1].Key))
	}
	return nil
}
