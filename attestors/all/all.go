// Package all is the explicit list of nhid's built-in attestors: the
// binaries build their attestors here, and adding one means adding it to
// these functions (there is no registration by init()).
package all

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/attestors/awsiid"
	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/attestors/jointoken"
	"github.com/nhid/nhid/attestors/k8s"
	"github.com/nhid/nhid/attestors/psat"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/tpm"
	"github.com/nhid/nhid/attestors/unix"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/clock"
)

// WorkloadConfig configures the agent's workload attestors.
type WorkloadConfig struct {
	// Log is the default logger of every attestor whose own config has none.
	Log *slog.Logger
	// Unix configures the unix attestor.
	Unix unix.Config
	// K8s configures the k8s attestor; nil leaves it out.
	K8s *k8s.Config
	// Container configures the container attestor; nil leaves it out.
	Container *container.Config
	// Sigstore configures the sigstore attestor, which verifies the
	// images the container attestor finds (and, with K8s, the images the
	// kubelet reports for pod containers); nil leaves it out. It needs
	// Container or K8s.
	Sigstore *sigstore.Config
}

// WorkloadAttestors builds every built-in workload attestor.
func WorkloadAttestors(cfg WorkloadConfig) ([]attestor.Workload, error) {
	if cfg.Unix.Log == nil {
		cfg.Unix.Log = cfg.Log
	}
	u, err := unix.New(cfg.Unix)
	if err != nil {
		return nil, fmt.Errorf("workload attestor %s: %w", unix.Type, err)
	}
	as := []attestor.Workload{u}
	if cfg.K8s != nil {
		kc := *cfg.K8s
		if kc.Log == nil {
			kc.Log = cfg.Log
		}
		ka, err := k8s.New(kc)
		if err != nil {
			return nil, fmt.Errorf("workload attestor %s: %w", k8s.Type, err)
		}
		as = append(as, ka)
		if cfg.Container == nil && cfg.Sigstore != nil {
			return appendPodSigstore(as, cfg, ka)
		}
	}
	return appendContainerAttestors(as, cfg)
}

// NodeVerifierConfig configures the server halves of the node attestors.
type NodeVerifierConfig struct {
	// TrustDomain is the domain agent IDs are minted in.
	TrustDomain spiffeid.TrustDomain
	// Tokens is the join-token store.
	Tokens jointoken.TokenStore
	// K8sPSATClusters are the clusters whose agents may attest with
	// k8s_psat; none refuses every such attestation.
	K8sPSATClusters map[string]psat.ClusterConfig
	// TPM configures the tpm attestor; nil leaves it out. Its TrustDomain,
	// Clock and Log default to the fields here.
	TPM *tpm.VerifierConfig
	// AWSIID configures the aws_iid attestor; nil leaves it out. Its
	// TrustDomain, Clock and Log default to the fields here.
	AWSIID *awsiid.VerifierConfig
	// Clock decides expiry. Defaults to the wall clock.
	Clock clock.Clock
	// Log defaults to slog.Default().
	Log *slog.Logger
}

// NodeVerifiers builds the server half of every built-in node attestor.
// Their types are distinct; the agent API picks one by the type the agent
// names.
func NodeVerifiers(cfg NodeVerifierConfig) ([]attestor.NodeVerifier, error) {
	jt, err := jointoken.NewVerifier(jointoken.VerifierConfig{
		TrustDomain: cfg.TrustDomain,
		Tokens:      cfg.Tokens,
		Clock:       cfg.Clock,
		Log:         cfg.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("node attestor %s: %w", jointoken.Type, err)
	}
	ps, err := psat.NewVerifier(psat.VerifierConfig{
		TrustDomain: cfg.TrustDomain,
		Clusters:    cfg.K8sPSATClusters,
		Log:         cfg.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("node attestor %s: %w", psat.Type, err)
	}
	vs := []attestor.NodeVerifier{jt, ps}
	if cfg.TPM != nil {
		v, err := tpmVerifier(cfg)
		if err != nil {
			return nil, fmt.Errorf("node attestor %s: %w", tpm.Type, err)
		}
		vs = append(vs, v)
	}
	if cfg.AWSIID != nil {
		v, err := awsiidVerifier(cfg)
		if err != nil {
			return nil, fmt.Errorf("node attestor %s: %w", awsiid.Type, err)
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// inherit fills an attestor's own trust domain, clock and log from cfg
// where its configuration leaves them unset.
func (cfg NodeVerifierConfig) inherit(td *spiffeid.TrustDomain, clk *clock.Clock, log **slog.Logger) {
	if td.IsZero() {
		*td = cfg.TrustDomain
	}
	if *clk == nil {
		*clk = cfg.Clock
	}
	if *log == nil {
		*log = cfg.Log
	}
}

func awsiidVerifier(cfg NodeVerifierConfig) (*awsiid.Verifier, error) {
	ac := *cfg.AWSIID
	cfg.inherit(&ac.TrustDomain, &ac.Clock, &ac.Log)
	return awsiid.NewVerifier(ac)
}

func tpmVerifier(cfg NodeVerifierConfig) (*tpm.Verifier, error) {
	tc := *cfg.TPM
	cfg.inherit(&tc.TrustDomain, &tc.Clock, &tc.Log)
	return tpm.NewVerifier(tc)
}

// NodeEvidenceConfig holds what the agent halves need; only the fields of
// the chosen attestor are read.
type NodeEvidenceConfig struct {
	// JoinToken is the token for the join_token attestor.
	JoinToken string
	// K8sPSAT configures the k8s_psat attestor's agent half.
	K8sPSAT psat.EvidenceConfig
	// TPM configures the tpm attestor's agent half.
	TPM tpm.EvidenceConfig
	// AWSIID configures the aws_iid attestor's agent half.
	AWSIID awsiid.EvidenceConfig
}

// NodeEvidenceTypes lists the node attestor types NodeEvidence knows.
func NodeEvidenceTypes() []string {
	return []string{jointoken.Type, psat.Type, tpm.Type, awsiid.Type}
}

// NodeEvidence builds the agent half of the node attestor named
// attestorType.
func NodeEvidence(attestorType string, cfg NodeEvidenceConfig) (attestor.NodeEvidence, error) {
	switch attestorType {
	case jointoken.Type:
		if cfg.JoinToken == "" {
			return nil, errors.New("node attestor join_token: JoinToken: must be set")
		}
		ev, err := jointoken.NewEvidence(cfg.JoinToken)
		if err != nil {
			return nil, fmt.Errorf("node attestor join_token: %w", err)
		}
		return ev, nil
	case psat.Type:
		ev, err := psat.NewEvidence(cfg.K8sPSAT)
		if err != nil {
			return nil, fmt.Errorf("node attestor %s: %w", psat.Type, err)
		}
		return ev, nil
	case tpm.Type:
		ev, err := tpm.NewEvidence(cfg.TPM)
		if err != nil {
			return nil, fmt.Errorf("node attestor %s: %w", tpm.Type, err)
		}
		return ev, nil
	case awsiid.Type:
		ev, err := awsiid.NewEvidence(cfg.AWSIID)
		if err != nil {
			return nil, fmt.Errorf("node attestor %s: %w", awsiid.Type, err)
		}
		return ev, nil
	default:
		return nil, fmt.Errorf("node attestor %q: unknown; known attestors: %s",
			attestorType, strings.Join(NodeEvidenceTypes(), ", "))
	}
}
