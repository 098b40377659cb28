package workloadapi

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/protobuf/testing/protocmp"
)

func protoCmp() cmp.Option { return protocmp.Transform() }

// x509Watcher collects what go-spiffe's WatchX509Context delivers.
type x509Watcher struct {
	updates chan *spiffewl.X509Context
}

func newX509Watcher() *x509Watcher {
	return &x509Watcher{updates: make(chan *spiffewl.X509Context, 16)}
}

func (w *x509Watcher) OnX509ContextUpdate(c *spiffewl.X509Context) { w.updates <- c }

// OnX509ContextWatchError ignores errors: the client retries by itself, and
// the test sees only what it was sent.
func (w *x509Watcher) OnX509ContextWatchError(error) {}

func (w *x509Watcher) next(t *testing.T) *spiffewl.X509Context {
	t.Helper()
	select {
	case c := <-w.updates:
		return c
	case <-time.After(waitTimeout):
		t.Fatalf("no X.509 context update within %v", waitTimeout)
		return nil
	}
}

// x509BundleWatcher collects WatchX509Bundles updates as
// trust domain name → authorities (DER).
type x509BundleWatcher struct {
	updates chan map[string][][]byte
}

func (w *x509BundleWatcher) OnX509BundlesUpdate(set *x509bundle.Set) {
	out := map[string][][]byte{}
	for _, b := range set.Bundles() {
		out[b.TrustDomain().Name()] = rawCerts(b.X509Authorities())
	}
	w.updates <- out
}

func (w *x509BundleWatcher) OnX509BundlesWatchError(error) {}

func (w *x509BundleWatcher) next(t *testing.T) map[string][][]byte {
	t.Helper()
	select {
	case b := <-w.updates:
		return b
	case <-time.After(waitTimeout):
		t.Fatalf("no X.509 bundles update within %v", waitTimeout)
		return nil
	}
}
