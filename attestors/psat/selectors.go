package psat

import (
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
)

// uidRE is what a Kubernetes UID looks like (a UUID); anything else cannot
// be trusted to be one path segment of an agent ID.
var uidRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,128}$`)

// result builds the node's ID and selectors.
func (v *Verifier) result(c *cluster, n agentNode) (attestor.NodeResult, error) {
	uid := string(n.node.UID)
	if !uidRE.MatchString(uid) {
		return attestor.NodeResult{}, fmt.Errorf("k8s_psat cluster %s: node %s has an unusable uid %q", c.name, n.node.Name, uid)
	}
	id, err := agentid.New(v.td, Type, c.name+"/"+uid)
	if err != nil {
		return attestor.NodeResult{}, fmt.Errorf("k8s_psat cluster %s: %w", c.name, err)
	}
	b := builder{log: v.log.With(telemetry.Cluster, c.name)}
	b.add("cluster", c.name)
	b.add("agent_ns", n.ns)
	b.add("agent_sa", n.sa)
	b.add("agent_pod_name", n.pod.Name)
	b.add("agent_pod_uid", string(n.pod.UID))
	b.add("agent_node_name", n.node.Name)
	b.add("agent_node_uid", uid)
	for _, k := range slices.Sorted(maps.Keys(n.node.Labels)) {
		if c.labelKeys == nil || slices.Contains(c.labelKeys, k) {
			b.add("agent_node_label", k+":"+n.node.Labels[k])
		}
	}
	return attestor.NodeResult{AgentID: id, Selectors: b.sels, CanReattest: true}, nil
}

// builder collects selectors, leaving out any value that cannot form one
// (too long): the rest still hold, and an entry needing it cannot match.
type builder struct {
	log  *slog.Logger
	sels []selector.Selector
}

func (b *builder) add(kind, value string) {
	s, err := selector.New(Type, kind+":"+value)
	if err != nil {
		b.log.Warn("leaving out unrepresentable selector", "kind", kind, telemetry.Error, err)
		return
	}
	b.sels = append(b.sels, s)
}
