package etcd_test

import (
	"path/filepath"
	"testing"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/bolt"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	"github.com/nhid/nhid/pkg/store/storetest"
)

// BenchmarkStore runs the store benchmarks on etcd (one member on
// loopback, fsyncing like production) and on bbolt in the same run, so
// that the two compare on the same machine:
//
//	go test -run '^$' -bench BenchmarkStore -benchtime 20x ./pkg/store/etcd/
func BenchmarkStore(b *testing.B) {
	b.Run("backend=etcd", func(b *testing.B) {
		m := etcdtest.Start(b, etcdtest.Options{Fsync: true})
		storetest.RunBenchmarks(b, func(b *testing.B) store.Store {
			return openStore(b, []string{m.ClientURL}, etcd.Config{})
		})
	})
	b.Run("backend=bolt", func(b *testing.B) {
		storetest.RunBenchmarks(b, func(b *testing.B) store.Store {
			s, err := bolt.Open(filepath.Join(b.TempDir(), "nhid.db"), bolt.Options{})
			if err != nil {
				b.Fatalf("bolt.Open: %v", err)
			}
			b.Cleanup(func() { _ = s.Close() })
			return s
		})
	})
}
