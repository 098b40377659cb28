package manager

import (
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/nhid/nhid/pkg/telemetry"
)

// fedBundle is a federated trust domain's bundle. gen tells its versions
// apart in Update keys: it changes whenever the bundle does.
type fedBundle struct {
	b   *spiffebundle.Bundle
	gen uint64
}

// SetFederatedBundles replaces the bundles of federated trust domains: the
// complete set, so a trust domain missing from bundles is dropped. A bundle
// claiming the agent's own trust domain is ignored: federation must never
// replace the agent's own roots. Subscriptions whose entries federate with
// a trust domain whose bundle changed get a new Update. The bundles must
// not be modified afterwards.
func (m *Manager) SetFederatedBundles(bundles []*spiffebundle.Bundle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string]fedBundle, len(bundles))
	changed := false
	for _, b := range bundles {
		if b == nil {
			continue
		}
		td := b.TrustDomain()
		if td == m.td {
			m.log.Warn("ignoring a federated bundle for the agent's own trust domain", telemetry.TrustDomain, td.Name())
			continue
		}
		if cur, ok := m.federated[td.Name()]; ok && cur.b.Equal(b) {
			next[td.Name()] = cur
			continue
		}
		m.fedGen++
		next[td.Name()] = fedBundle{b: b, gen: m.fedGen}
		changed = true
	}
	for name := range m.federated {
		if _, ok := next[name]; !ok {
			changed = true
		}
	}
	if !changed {
		return
	}
	m.federated = next
	m.metrics.federated.Set(float64(len(next)))
	m.notifyLocked()
}

// federatedForLocked returns the bundles of the trust domains the entries
// of recs federate with, each once, ordered by trust domain. A trust
// domain whose bundle the agent does not hold is left out: the workload
// gets it once the server sends it.
func (m *Manager) federatedForLocked(recs []*record) []fedBundle {
	if len(m.federated) == 0 {
		return nil
	}
	var (
		out  []fedBundle
		seen map[string]struct{}
	)
	for _, r := range recs {
		for _, name := range r.entry.GetFederatesWith() {
			fb, ok := m.federated[name]
			if !ok {
				continue
			}
			if _, dup := seen[name]; dup {
				continue
			}
			if seen == nil {
				seen = make(map[string]struct{})
			}
			seen[name] = struct{}{}
			out = append(out, fb)
		}
	}
	slices.SortFunc(out, func(a, b fedBundle) int {
		return strings.Compare(a.b.TrustDomain().Name(), b.b.TrustDomain().Name())
	})
	return out
}

// writeFederatedKey adds feds to an Update key.
func writeFederatedKey(b *strings.Builder, feds []fedBundle) {
	for _, f := range feds {
		b.WriteString("|fed:")
		b.WriteString(f.b.TrustDomain().Name())
		b.WriteByte('#')
		b.WriteString(strconv.FormatUint(f.gen, 10))
	}
}

func federatedBundles(feds []fedBundle) []*spiffebundle.Bundle {
	if len(feds) == 0 {
		return nil
	}
	out := make([]*spiffebundle.Bundle, len(feds))
	for i, f := range feds {
		out[i] = f.b
	}
	return out
}
