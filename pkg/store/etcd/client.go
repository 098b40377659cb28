package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/store"
)

// readChunk bounds the operations of one read transaction and the keys of
// one range page: 128 is etcd's default --max-txn-ops, so reads work on a
// cluster with default settings. Only large entry batches need more.
const readChunk = 128

// rangePage is the number of records one range request returns.
const rangePage = 1000

// maxAttempts bounds the retries of an optimistic transaction. Each failed
// attempt means another writer committed, so it is only reached under a
// pathological write storm on one key.
const maxAttempts = 1000

// check fails fast on a closed store or a cancelled context.
func (s *Store) check(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// request bounds one etcd request by RequestTimeout.
func (s *Store) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

// get reads key (or a range, with opts) with a linearizable read.
func (s *Store) get(ctx context.Context, op, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if err := s.check(ctx, op); err != nil {
		return nil, err
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.client.Get(rctx, key, opts...)
	if err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	return resp, nil
}

// getAt reads at revision rev, which an earlier linearizable read of the
// same operation returned: from whichever member the client talks to,
// without another round of consensus. A member that has not applied rev
// yet says so, and the read is then made linearizable.
func (s *Store) getAt(ctx context.Context, op, key string, rev int64, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	pinned := append(opts[:len(opts):len(opts)], clientv3.WithRev(rev))
	resp, err := s.get(ctx, op, key, append(pinned, clientv3.WithSerializable())...)
	if errors.Is(err, rpctypes.ErrFutureRev) {
		return s.get(ctx, op, key, pinned...)
	}
	return resp, err
}

// txn commits one transaction.
func (s *Store) txn(ctx context.Context, op string, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	if err := s.check(ctx, op); err != nil {
		return nil, err
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.client.Txn(rctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	return resp, nil
}

// wrap adds the operation to err and turns etcd's failures into the store
// sentinels callers branch on.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	switch {
	case s.closed.Load():
		return fmt.Errorf("%s: %w", op, store.ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", op, ctx.Err())
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%s: etcd refused the transaction (%v): raise etcd's --max-txn-ops and --max-request-bytes (see docs/ha.md) or send fewer records per call: %w",
			op, err, store.ErrInvalidArgument)
	case unavailable(err):
		return fmt.Errorf("%s: etcd at %v did not answer within %v (is a quorum of its members up?); a write may or may not have been applied: %v: %w",
			op, s.cfg.Endpoints, s.cfg.RequestTimeout, err, store.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unavailable reports errors that mean the cluster cannot serve now.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) && ee.Code() == codes.Unavailable {
		return true
	}
	if st, ok := status.FromError(err); ok {
		return st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded
	}
	return false
}

// retry runs attempt until it reports done or fails, backing off a little
// with jitter once conflicts repeat, so that writers racing on one key
// spread out instead of colliding again.
func (s *Store) retry(ctx context.Context, op string, attempt func() (done bool, err error)) error {
	for i := range maxAttempts {
		done, err := attempt()
		if err != nil || done {
			return err
		}
		if i < 2 {
			continue
		}
		d := time.Duration(rand.Int64N(int64(min(time.Millisecond<<min(i, 6), 50*time.Millisecond)))) + time.Millisecond
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", op, ctx.Err())
		case <-t.C:
		}
	}
	return fmt.Errorf("%s: gave up after %d conflicting attempts", op, maxAttempts)
}

// getMany reads keys at revision rev (0: now) in transactions of at most
// readChunk reads, and returns the ones that exist by key. The header
// revision of the first read is returned, so that callers can pin later
// reads to it.
func (s *Store) getMany(ctx context.Context, op string, keys []string, rev int64) (map[string]*mvccpb.KeyValue, int64, error) {
	out := make(map[string]*mvccpb.KeyValue, len(keys))
	for off := 0; off < len(keys); off += readChunk {
		chunk := keys[off:min(off+readChunk, len(keys))]
		resp, err := s.readTxn(ctx, op, chunk, rev)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().GetKvs() {
				out[string(kv.Key)] = kv
			}
		}
	}
	return out, rev, nil
}

// readTxn reads keys in one transaction at rev (now if 0), serializable
// when rev is pinned, as getAt.
func (s *Store) readTxn(ctx context.Context, op string, keys []string, rev int64) (*clientv3.TxnResponse, error) {
	return s.readOps(ctx, op, rev, func(opts ...clientv3.OpOption) []clientv3.Op {
		ops := make([]clientv3.Op, len(keys))
		for i, k := range keys {
			ops[i] = clientv3.OpGet(k, opts...)
		}
		return ops
	})
}

// readOps runs the reads build makes, with the options that pin them to
// rev, in one transaction: serializable when rev is pinned, as getAt.
func (s *Store) readOps(ctx context.Context, op string, rev int64, build func(opts ...clientv3.OpOption) []clientv3.Op) (*clientv3.TxnResponse, error) {
	if rev == 0 {
		return s.txn(ctx, op, nil, build(), nil)
	}
	resp, err := s.txn(ctx, op, nil, build(clientv3.WithRev(rev), clientv3.WithSerializable()), nil)
	if errors.Is(err, rpctypes.ErrFutureRev) {
		return s.txn(ctx, op, nil, build(clientv3.WithRev(rev)), nil)
	}
	return resp, err
}

// scan reads the keys in [start, end) at revision rev, page by page, and
// calls fn on each until fn returns false. keysOnly skips the values.
// A rev of 0 reads the first page now and pins the others to it; page is
// the keys per request, rangePage if 0.
func (s *Store) scan(ctx context.Context, op, start, end string, rev int64, keysOnly bool, page int64, fn func(kv *mvccpb.KeyValue) (bool, error)) error {
	if page <= 0 {
		page = rangePage
	}
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		var resp *clientv3.GetResponse
		var err error
		if rev > 0 {
			resp, err = s.getAt(ctx, op, start, rev, opts...)
		} else {
			resp, err = s.get(ctx, op, start, opts...)
		}
		if err != nil {
			return err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			more, err := fn(kv)
			if err != nil || !more {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		start = afterKey(string(resp.Kvs[len(resp.Kvs)-1].Key))
	}
}

// first is the first key-value of a range answer, nil if there is none.
func first(kvs []*mvccpb.KeyValue) *mvccpb.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	return kvs[0]
}
