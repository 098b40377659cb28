package manager

import (
	"crypto/x509"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A workload that connects anew for every fetch must not make the manager
// parse its SVID (chain and key) every time; only a bounded number of
// SVIDs nobody subscribes to stay parsed.
func TestIdleSVIDs_StayParsedWithinTheBound(t *testing.T) {
	f := newFixture(t, 0)
	f.m.maxIdle = 2
	f.setEntries(t, workloadEntry(1), workloadEntry(2), workloadEntry(3))
	f.step(t)

	fetch := func(n int) *x509Leaf {
		t.Helper()
		sub := f.m.Subscribe(sels(n))
		defer sub.Close()
		u := next(t, sub)
		if len(u.Identities) != 1 {
			t.Fatalf("fetch %d: %d identities, want 1", n, len(u.Identities))
		}
		return &x509Leaf{u.Identities[0].Certificates[0].Raw, u.Identities[0].Certificates[0]}
	}
	first := fetch(1)
	if again := fetch(1); again.parsed != first.parsed {
		t.Error("a second fetch after the first subscription closed parsed the SVID again")
	}
	if cur := f.m.Current(sels(1)); cur.Identities[0].Certificates[0] != first.parsed {
		t.Error("Current parsed an idle SVID again")
	}

	fetch(2)
	fetch(3)
	if diff := cmp.Diff(map[string]bool{"e01": false, "e02": true, "e03": true}, f.parsedState()); diff != "" {
		t.Errorf("parsed SVIDs after serving 1, 2, 3 with room for 2 idle (-want +got):\n%s", diff)
	}
	if got := fetch(1); got.parsed == first.parsed || string(got.der) != string(first.der) {
		t.Error("the least recently served SVID should have been parsed again, from the same DER")
	}

	// A held SVID is not idle and does not count against the bound:
	// holding 3 leaves only 1 (just served) idle.
	sub := f.m.Subscribe(sels(3))
	defer sub.Close()
	next(t, sub)
	f.m.mu.Lock()
	idle := f.m.idle.Len()
	f.m.mu.Unlock()
	if idle != 1 {
		t.Errorf("idle SVIDs while one of the two parsed is held = %d, want 1", idle)
	}
}

// x509Leaf is an SVID's leaf as served: its DER, and the parsed
// certificate, whose identity tells whether it was parsed again.
type x509Leaf struct {
	der    []byte
	parsed *x509.Certificate
}

// parsedState says, per entry id, whether its SVID is held parsed.
func (f *fixture) parsedState() map[string]bool {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	out := make(map[string]bool)
	for id, r := range f.m.entries {
		out[id] = r.svid != nil && r.svid.parsed != nil
	}
	return out
}

// Run scans every entry under the manager's lock; a workload connecting
// for an SVID that is ready must not make it do so, and one waiting for an
// SVID must.
func TestSubscribe_WakesTheMintLoopOnlyToMint(t *testing.T) {
	f := newFixture(t, 0)
	f.setEntries(t, workloadEntry(1))
	f.step(t)
	drainWake(f.m)

	sub := f.m.Subscribe(sels(1))
	next(t, sub)
	sub.Close()
	if drainWake(f.m) {
		t.Error("subscribing to a ready SVID woke the mint loop")
	}

	f.setEntries(t, workloadEntry(1), workloadEntry(2)) // 2 has no SVID yet
	drainWake(f.m)
	sub = f.m.Subscribe(sels(2))
	defer sub.Close()
	if !drainWake(f.m) {
		t.Error("subscribing to an SVID not yet minted did not wake the mint loop")
	}
}

// drainWake reports whether the mint loop had been woken, and clears it.
func drainWake(m *Manager) bool {
	select {
	case <-m.wake:
		return true
	default:
		return false
	}
}
