package auditlog_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nhid/nhid/pkg/audit"
	"github.com/nhid/nhid/pkg/audit/auditlog"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
)

// faultyStore injects failures into a real store's appends: the first
// fail appends fail before reaching the store; with applied set they reach
// it and are committed, and only the answer is lost (as when etcd loses
// quorum after applying a write).
type faultyStore struct {
	store.AuditStore
	fail    atomic.Int32
	applied bool
	head    atomic.Pointer[store.AuditHead] // if set, AuditHead answers this
}

var errInjected = fmt.Errorf("injected: %w", store.ErrUnavailable)

func (f *faultyStore) AppendAudit(ctx context.Context, fn func(store.AuditHead) (store.AuditAppend, error)) (store.AuditHead, error) {
	if f.fail.Add(-1) < 0 {
		return f.AuditStore.AppendAudit(ctx, fn)
	}
	if f.applied {
		_, _ = f.AuditStore.AppendAudit(ctx, fn)
	}
	return store.AuditHead{}, errInjected
}

func (f *faultyStore) AuditHead(ctx context.Context) (store.AuditHead, error) {
	if h := f.head.Load(); h != nil {
		return *h, nil
	}
	return f.AuditStore.AuditHead(ctx)
}

func TestLog_StoreFailuresAreRetriedWithoutLossOrDuplicates(t *testing.T) {
	for _, applied := range []bool{false, true} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			dir := t.TempDir()
			st := openBolt(t, dir)
			defer st.Close()
			fs := &faultyStore{AuditStore: st, applied: applied}
			fs.fail.Store(3)
			l := start(t, fs, filepath.Join(dir, "k"), auditlog.Config{})
			for i := range 10 {
				l.Record(t.Context(), event(i))
			}
			flush(t, l.Log)
			if err := l.stop(); err != nil {
				t.Fatal(err)
			}
			_, recs, err := verifyStore(t, st, l.TrustedKeys()...)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			seen := map[string]bool{}
			for _, r := range recs {
				if seen[r.Target] {
					t.Fatalf("record of %s stored twice", r.Target)
				}
				seen[r.Target] = true
			}
			if len(recs) != 11 {
				t.Fatalf("%d records stored, want 11", len(recs))
			}
		})
	}
}

func TestLog_AuditHeadReportsAStoreBehindWhatThisServerAppended(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	defer st.Close()
	fs := &faultyStore{AuditStore: st}
	l := start(t, fs, filepath.Join(dir, "k"), auditlog.Config{})
	for i := range 5 {
		l.Record(t.Context(), event(i))
	}
	flush(t, l.Log)
	real, err := st.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	fs.head.Store(&store.AuditHead{Seq: 2, Hash: []byte("rolled back")})
	got, err := l.AuditHead(t.Context())
	if err != nil || got.Seq != real.Seq || string(got.Hash) != string(real.Hash) {
		t.Fatalf("AuditHead with the store rolled back to 2 = %d, %v; want this server's head %d", got.Seq, err, real.Seq)
	}
}

func TestLog_ServersSharingAnEtcdStoreFormOneVerifiableChain(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.Options{})
	var logs []*running
	for i := range 3 {
		st, err := etcd.Open(t.Context(), etcd.Config{Endpoints: []string{m.ClientURL}, Prefix: "/audit-ha/"})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		logs = append(logs, start(t, st, filepath.Join(t.TempDir(), "k"), auditlog.Config{
			Server: fmt.Sprintf("server-%d", i), CheckpointEvery: 25,
		}))
	}
	var wg sync.WaitGroup
	for i, l := range logs {
		wg.Go(func() {
			for j := range 60 {
				l.Record(context.Background(), event(i*1000+j))
			}
		})
	}
	wg.Wait()
	// Which server's records land last is up to the scheduler, so give the
	// server whose key is trusted below the last word: once the others'
	// records (and so their key announcements) are in the store, one more
	// record makes its stop checkpoint sign a head that covers them all.
	for _, l := range logs {
		flush(t, l.Log)
	}
	logs[2].Record(context.Background(), event(9999))
	for _, l := range logs {
		if err := l.stop(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := etcd.Open(t.Context(), etcd.Config{Endpoints: []string{m.ClientURL}, Prefix: "/audit-ha/"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Trusting one server's key is enough: the others announced theirs in
	// records its checkpoints cover.
	sum, recs, err := verifyStore(t, st, logs[2].TrustedKeys()...)
	if err != nil {
		t.Fatalf("verify the shared chain: %v (summary %+v)", err, sum)
	}
	if len(recs) != 3*61+1 {
		t.Fatalf("%d records, want %d", len(recs), 3*61+1)
	}
	var f *audit.Failure
	if _, _, err := verifyStore(t, st); !errors.As(err, &f) || !f.Checkpoint {
		t.Fatalf("verify without any trusted key: %v, want an untrusted checkpoint", err)
	}
}
