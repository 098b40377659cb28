// Package agentid owns the SPIFFE IDs nhid reserves for itself: the
// server's, and the agents' spiffe://<td>/nhid/agent/<attestor>/<node-id>.
package agentid

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	agentPrefix = "/nhid/agent/"
	serverPath  = "/nhid/server"
)

// Server is the server's SPIFFE ID. Node-alias entries use it as parent_id.
func Server(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromPath(td, serverPath)
	if err != nil {
		panic(err) // the path is a valid constant
	}
	return id
}

// New builds an agent ID from the attestor type and a node identifier that
// is stable for that attestor (a token id, an EK hash, a node UID). The node
// identifier may hold slashes (k8s_psat/<cluster>/<node-uid>).
func New(td spiffeid.TrustDomain, attestor, nodeID string) (spiffeid.ID, error) {
	if attestor == "" || strings.Contains(attestor, "/") {
		return spiffeid.ID{}, fmt.Errorf("attestor type %q must be a single path segment", attestor)
	}
	id, err := spiffeid.FromPath(td, agentPrefix+attestor+"/"+nodeID)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent id for node %q: %w", nodeID, err)
	}
	return id, nil
}

// IsAgent reports whether id is in the reserved agent namespace.
func IsAgent(id spiffeid.ID) bool {
	return strings.HasPrefix(id.Path(), agentPrefix)
}

// IsReserved reports whether id lies in the namespace nhid reserves for its
// own components (/nhid/...), which workload entries may not use.
func IsReserved(id spiffeid.ID) bool {
	p := id.Path()
	return p == "/nhid" || strings.HasPrefix(p, "/nhid/")
}
