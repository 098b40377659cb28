package psat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// EvidenceConfig configures the agent half.
type EvidenceConfig struct {
	// Cluster names the cluster the agent runs in, as the server's config
	// does. Required.
	Cluster string
	// TokenPath is the projected token file; default DefaultTokenPath.
	TokenPath string
}

// Evidence is the agent half: it presents the projected token as it is at
// the time of each attestation, so a token the kubelet renewed is fresh
// evidence. It implements attestor.NodeEvidence.
type Evidence struct {
	cluster   string
	tokenPath string
}

// NewEvidence checks cfg. The token file is read only when evidence is
// needed, since the kubelet may not have written it yet.
func NewEvidence(cfg EvidenceConfig) (*Evidence, error) {
	if err := CheckClusterName(cfg.Cluster); err != nil {
		return nil, fmt.Errorf("k8s_psat evidence: Cluster: %w", err)
	}
	if cfg.TokenPath == "" {
		cfg.TokenPath = DefaultTokenPath
	}
	if !filepath.IsAbs(cfg.TokenPath) {
		return nil, fmt.Errorf("k8s_psat evidence: TokenPath: %q must be an absolute path", cfg.TokenPath)
	}
	return &Evidence{cluster: cfg.Cluster, tokenPath: cfg.TokenPath}, nil
}

// Type returns "k8s_psat".
func (e *Evidence) Type() string { return Type }

// CanReattest reports true: the kubelet keeps the token fresh, so the
// agent can attest again after an eviction.
func (e *Evidence) CanReattest() bool { return true }

// Evidence reads the token file and returns the payload.
func (e *Evidence) Evidence(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("k8s_psat evidence: %w", err)
	}
	tok, err := e.readToken()
	if err != nil {
		return nil, fmt.Errorf("k8s_psat evidence: %w", err)
	}
	return encodePayload(payload{Cluster: e.cluster, Token: tok})
}

func (e *Evidence) readToken() (string, error) {
	f, err := os.Open(e.tokenPath)
	if err != nil {
		return "", fmt.Errorf("read projected token: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxToken+1))
	if err != nil {
		return "", fmt.Errorf("read projected token %s: %w", e.tokenPath, err)
	}
	tok := strings.TrimSpace(string(data))
	if err := checkToken(tok); err != nil {
		return "", fmt.Errorf("projected token %s: %w", e.tokenPath, err)
	}
	return tok, nil
}

// Respond always fails: the token is checked in one step.
func (e *Evidence) Respond(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("k8s_psat attestation has no challenge; refusing to answer one")
}
