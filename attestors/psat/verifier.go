package psat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Refusal reasons. The agent sees "attestation failed: <reason>".
var (
	errMalformed      = fmt.Errorf("%w: k8s_psat evidence malformed", attestor.ErrAttestationFailed)
	errUnknownCluster = fmt.Errorf("%w: k8s_psat cluster not configured on this server", attestor.ErrAttestationFailed)
	errNotAuthentic   = fmt.Errorf("%w: k8s_psat token not authenticated by the API server", attestor.ErrAttestationFailed)
	errAudience       = fmt.Errorf("%w: k8s_psat token not valid for the server's audience", attestor.ErrAttestationFailed)
	errNotAllowed     = fmt.Errorf("%w: k8s_psat service account not allowed", attestor.ErrAttestationFailed)
	errNotPodBound    = fmt.Errorf("%w: k8s_psat token is not bound to a pod", attestor.ErrAttestationFailed)
	errPodGone        = fmt.Errorf("%w: k8s_psat agent pod not found", attestor.ErrAttestationFailed)
	errPodMismatch    = fmt.Errorf("%w: k8s_psat agent pod does not match the token", attestor.ErrAttestationFailed)
	errPodNotRunning  = fmt.Errorf("%w: k8s_psat agent pod is not running on a node", attestor.ErrAttestationFailed)
	errNodeGone       = fmt.Errorf("%w: k8s_psat agent node not found", attestor.ErrAttestationFailed)
	errNodeMismatch   = fmt.Errorf("%w: k8s_psat agent node does not match the token", attestor.ErrAttestationFailed)
)

// ClusterConfig is how the server reaches and trusts one cluster.
type ClusterConfig struct {
	// APIServerURL is the API server; default DefaultAPIServerURL.
	APIServerURL string
	// CAFile is the PEM bundle the API server's certificate must chain
	// to; default DefaultCAFile.
	CAFile string
	// TokenFile holds the server's own bearer token for the API server,
	// re-read on every call; default DefaultTokenFile. Its identity needs
	// create on tokenreviews and get on pods and nodes.
	TokenFile string
	// ServiceAccountAllowList names the service accounts, "namespace:name",
	// whose tokens may attest nodes. Required.
	ServiceAccountAllowList []string
	// Audience the token must be valid for; default DefaultAudience.
	Audience string
	// AllowedNodeLabelKeys limits the agent_node_label selectors to these
	// label keys; empty gives every label of the node.
	AllowedNodeLabelKeys []string
}

// VerifierConfig configures the server half.
type VerifierConfig struct {
	// TrustDomain is the domain agent IDs are minted in. Required.
	TrustDomain spiffeid.TrustDomain
	// Clusters by name. A server without clusters refuses every k8s_psat
	// attestation.
	Clusters map[string]ClusterConfig
	// Log receives one line per attestation; default slog.Default().
	Log *slog.Logger
}

// Verifier is the server half. It implements attestor.NodeVerifier and is
// safe for concurrent use.
type Verifier struct {
	td       spiffeid.TrustDomain
	clusters map[string]*cluster
	log      *slog.Logger
}

// NewVerifier checks cfg and loads every cluster's CA bundle.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("k8s_psat verifier: TrustDomain: must be set")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	v := &Verifier{td: cfg.TrustDomain, clusters: map[string]*cluster{}, log: cfg.Log.With(telemetry.Attestor, Type)}
	for _, name := range slices.Sorted(maps.Keys(cfg.Clusters)) {
		c, err := newCluster(name, cfg.Clusters[name])
		if err != nil {
			v.Close()
			return nil, fmt.Errorf("k8s_psat verifier: cluster %s: %w", name, err)
		}
		v.clusters[name] = c
	}
	return v, nil
}

// Type returns "k8s_psat".
func (v *Verifier) Type() string { return Type }

// Close releases the clusters' idle connections.
func (v *Verifier) Close() {
	for _, c := range v.clusters {
		c.client.Close()
	}
}

// Attest reviews the token with the cluster's API server and binds it to
// the node of the pod it was issued for. API servers that cannot be
// reached, or that refuse the server's own credentials, are internal
// errors, not refusals, so the agent retries. There is no challenge.
func (v *Verifier) Attest(ctx context.Context, data []byte, _ attestor.Challenger) (attestor.NodeResult, error) {
	if err := ctx.Err(); err != nil {
		return attestor.NodeResult{}, fmt.Errorf("k8s_psat attestation: %w", err)
	}
	p, err := decodePayload(data)
	if err != nil {
		v.log.Warn("k8s_psat attestation refused", telemetry.Reason, errMalformed.Error(), telemetry.Error, err)
		return attestor.NodeResult{}, errMalformed
	}
	log := v.log.With(telemetry.Cluster, p.Cluster)
	c, ok := v.clusters[p.Cluster]
	if !ok {
		log.Warn("k8s_psat attestation refused", telemetry.Reason, errUnknownCluster.Error())
		return attestor.NodeResult{}, errUnknownCluster
	}
	a := &attestation{c: c, log: log}
	node, err := a.run(ctx, p.Token)
	if err != nil {
		if errors.Is(err, attestor.ErrAttestationFailed) {
			reason := strings.TrimPrefix(err.Error(), attestor.ErrAttestationFailed.Error()+": ")
			a.log.Warn("k8s_psat attestation refused", telemetry.Reason, reason, telemetry.Error, a.detail)
		}
		return attestor.NodeResult{}, err
	}
	res, err := v.result(c, node)
	if err != nil {
		return attestor.NodeResult{}, err
	}
	a.log.Info("k8s_psat attested", telemetry.SPIFFEID, res.AgentID.String())
	return res, nil
}
