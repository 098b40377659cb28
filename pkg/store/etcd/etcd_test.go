package etcd_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/store/etcd"
	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
	"github.com/nhid/nhid/pkg/store/storetest"
)

// prefixes numbers the stores opened on one member, so that every test
// gets an empty store of its own without a member of its own.
var prefixes atomic.Int64

// openStore opens a store under a fresh prefix of m and closes it with
// the test.
func openStore(tb testing.TB, endpoints []string, cfg etcd.Config) *etcd.Store {
	tb.Helper()
	cfg.Endpoints = endpoints
	if cfg.Prefix == "" {
		cfg.Prefix = fmt.Sprintf("/nhid-test/%d/", prefixes.Add(1))
	}
	s, err := etcd.Open(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.Options{})
	storetest.Run(t, func(t *testing.T) store.Store {
		return openStore(t, []string{m.ClientURL}, etcd.Config{})
	})
}
