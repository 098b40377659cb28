package auditlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Backoff of failed appends.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Run appends queued records until ctx ends, then appends what is still
// queued (within StopTimeout), signs a last checkpoint and returns. Run
// the log after everything that records has stopped, so that nothing is
// lost on a clean shutdown. Run may be called once.
func (l *Log) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("audit log: Run called twice")
	}
	tick := time.NewTicker(l.cfg.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return l.stop(nil, nil)
		case it := <-l.ch:
			batch, markers := l.collect(it)
			if err := l.commit(ctx, batch); err != nil {
				// ctx ended while the store failed: stop retries the batch.
				return l.stop(batch, markers)
			}
			release(markers)
		case <-tick.C:
			if l.sinceCheckpoint > 0 {
				l.checkpoint(ctx)
			}
		}
	}
}

// collect takes first and what else arrives within Linger of it, up to
// MaxBatch records and about 1 MiB, stopping early at a flush marker.
func (l *Log) collect(first item) (batch []item, markers []chan struct{}) {
	size := 0
	add := func(it item) bool {
		if it.done != nil {
			markers = append(markers, it.done)
			return false
		}
		batch = append(batch, it)
		size += recordSize(it.rec)
		return len(batch) < l.cfg.MaxBatch && size < maxBatchBytes
	}
	if !add(first) {
		return batch, markers
	}
	linger := time.NewTimer(l.cfg.Linger)
	defer linger.Stop()
	for {
		select {
		case it := <-l.ch:
			if !add(it) {
				return batch, markers
			}
		case <-linger.C:
			return batch, markers
		}
	}
}

// recordSize estimates a record's encoded size.
func recordSize(r *typesv1.AuditRecord) int {
	return 96 + len(r.Server) + len(r.Actor) + len(r.OnBehalfOf) + len(r.Action) + len(r.Target) +
		len(r.Outcome) + len(r.Reason) + len(r.Details)
}

func release(markers []chan struct{}) {
	for _, m := range markers {
		close(m)
	}
}

// commit appends batch, retrying store failures with backoff until it is
// stored or ctx ends (then it returns ctx's error and batch is unstored).
// Records the store refuses are dropped, loudly.
func (l *Log) commit(ctx context.Context, batch []item) error {
	if len(batch) == 0 {
		return nil
	}
	backoff := minBackoff
	var tried *attempt
	for {
		if tried != nil && l.applied(ctx, tried) {
			l.committedBatch(batch, tried)
			return nil
		}
		a, err := l.append(ctx, batch)
		switch {
		case err == nil:
			l.committedBatch(batch, a)
			return nil
		case errors.Is(err, store.ErrInvalidArgument) && len(batch) > 1:
			// Too large for the store (etcd's limits): halve it.
			half := len(batch) / 2
			if err := l.commit(ctx, batch[:half]); err != nil {
				return err
			}
			return l.commit(ctx, batch[half:])
		case errors.Is(err, store.ErrInvalidArgument):
			l.log.Error("the store refused an audit record", telemetry.Error, err.Error())
			l.drop(batch[0].rec, dropRejected)
			return nil
		case errors.Is(err, store.ErrClosed):
			for _, it := range batch {
				l.drop(it.rec, dropStoreClosed)
			}
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
		tried = a
		l.m.appendErrs.Inc()
		l.warnf("audit append failed; retrying", err, backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// attempt is what one append tried to store.
type attempt struct {
	firstSeq   uint64
	firstHash  []byte
	head       store.AuditHead
	checkpoint *typesv1.AuditCheckpoint
}

// append links the batch onto the store's head and appends it in one
// transaction, with a checkpoint when this server is due one.
func (l *Log) append(ctx context.Context, batch []item) (*attempt, error) {
	a := &attempt{}
	head, err := l.cfg.Store.AppendAudit(ctx, func(h store.AuditHead) (store.AuditAppend, error) {
		chain := audit.NewChain(h.Seq, h.Hash)
		recs := make([]*typesv1.AuditRecord, len(batch))
		for i, it := range batch {
			chain.Link(it.rec)
			recs[i] = it.rec
		}
		*a = attempt{firstSeq: recs[0].Seq, firstHash: recs[0].Hash}
		if l.sinceCheckpoint+len(recs) < l.cfg.CheckpointEvery {
			return store.AuditAppend{Records: recs}, nil
		}
		seq, hash := chain.Head()
		cp, err := audit.SignCheckpoint(l.key, seq, hash, l.clock.Now().UnixNano(), l.cfg.Server)
		if err != nil {
			return store.AuditAppend{}, err
		}
		a.checkpoint = cp
		return store.AuditAppend{Records: recs, Checkpoint: cp}, nil
	})
	a.head = head
	return a, err
}

// applied reports whether an append that failed ambiguously (the store may
// or may not have applied it) is stored after all: its first record is.
func (l *Log) applied(ctx context.Context, a *attempt) bool {
	if a.firstSeq == 0 {
		return false
	}
	recs, err := l.cfg.Store.ListAudit(ctx, store.ListAuditRequest{FromSeq: a.firstSeq, Limit: 1})
	if err != nil || len(recs) == 0 || recs[0].Seq != a.firstSeq || !bytes.Equal(recs[0].Hash, a.firstHash) {
		return false
	}
	if a.checkpoint != nil {
		a.head = store.AuditHead{Seq: a.checkpoint.Seq, Hash: a.checkpoint.HeadHash}
	}
	return true
}

// committedBatch updates the writer's state after a batch is stored and
// streams it to the sink.
func (l *Log) committedBatch(batch []item, a *attempt) {
	last := batch[len(batch)-1].rec
	l.mu.Lock()
	if last.Seq > l.committed.Seq {
		l.committed = store.AuditHead{Seq: last.Seq, Hash: last.Hash}
	}
	l.mu.Unlock()
	l.sinceCheckpoint += len(batch)
	if a.checkpoint != nil {
		l.sinceCheckpoint = 0
		l.m.checkpoints.Inc()
	}
	now := time.Now()
	for _, it := range batch {
		l.m.lag.Observe(now.Sub(it.queued).Seconds())
	}
	l.m.appended.Add(float64(len(batch)))
	l.m.batchSize.Observe(float64(len(batch)))
	l.m.head.Set(float64(last.Seq))
	lines := make([]audit.Line, 0, len(batch)+1)
	for _, it := range batch {
		lines = append(lines, audit.Line{Record: it.rec})
	}
	if a.checkpoint != nil {
		lines = append(lines, audit.Line{Checkpoint: a.checkpoint})
	}
	l.toSink(lines)
}

// checkpoint signs the chain's current head on its own.
func (l *Log) checkpoint(ctx context.Context) {
	var cp *typesv1.AuditCheckpoint
	_, err := l.cfg.Store.AppendAudit(ctx, func(h store.AuditHead) (store.AuditAppend, error) {
		var err error
		cp, err = audit.SignCheckpoint(l.key, h.Seq, h.Hash, l.clock.Now().UnixNano(), l.cfg.Server)
		return store.AuditAppend{Checkpoint: cp}, err
	})
	switch {
	case err == nil, errors.Is(err, store.ErrAlreadyExists):
	default:
		l.m.appendErrs.Inc()
		l.warnf("audit checkpoint failed; retrying at the next interval", err, l.cfg.CheckpointInterval)
		return
	}
	l.sinceCheckpoint = 0
	if err == nil {
		l.m.checkpoints.Inc()
		l.toSink([]audit.Line{{Checkpoint: cp}})
	}
}

// stop appends pending and everything still queued, then signs a last
// checkpoint.
func (l *Log) stop(pending []item, markers []chan struct{}) error {
	l.closed.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.StopTimeout)
	defer cancel()
	var lost int
	flush := func(batch []item, markers []chan struct{}) {
		if err := l.commit(ctx, batch); err != nil {
			for _, it := range batch {
				l.drop(it.rec, dropShutdown)
			}
			lost += len(batch)
		}
		release(markers)
	}
	flush(pending, markers)
	for {
		select {
		case it := <-l.ch:
			flush(l.collect(it))
			continue
		default:
		}
		if l.inflight.Load() == 0 && len(l.ch) == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if l.sinceCheckpoint > 0 && ctx.Err() == nil {
		l.checkpoint(ctx)
	}
	if lost > 0 {
		return fmt.Errorf("audit log: %d records could not be appended before the stop timeout (%v)", lost, l.cfg.StopTimeout)
	}
	return nil
}

// toSink writes lines to the sink, if any, in one write.
func (l *Log) toSink(lines []audit.Line) {
	if l.cfg.Sink == nil || len(lines) == 0 {
		return
	}
	var buf bytes.Buffer
	for _, line := range lines {
		b, err := audit.MarshalLine(line)
		if err != nil {
			l.m.sinkErrs.Inc()
			continue
		}
		buf.Write(b)
	}
	if _, err := l.cfg.Sink.Write(buf.Bytes()); err != nil {
		l.m.sinkErrs.Inc()
		l.warnf("audit sink write failed", err, 0)
	}
}

// warnf logs a writer problem at most once every 10 seconds.
func (l *Log) warnf(msg string, err error, retryIn time.Duration) {
	if time.Since(l.warnedAt) < 10*time.Second {
		return
	}
	l.warnedAt = time.Now()
	attrs := []any{telemetry.Error, err.Error(), "buffered", len(l.ch)}
	if retryIn > 0 {
		attrs = append(attrs, "retry_in", retryIn.String())
	}
	l.log.Warn(msg, attrs...)
}
