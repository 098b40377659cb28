package sigstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nhid/nhid/pkg/selector"
)

// ImageResolver names the image a process's container runs; the container
// attestor is one.
type ImageResolver interface {
	// ImageRef returns "<repository>@sha256:<hex>" for process pid; ok is
	// false when pid is in no container or its image digest is unknown.
	ImageRef(ctx context.Context, pid int32) (ref string, ok bool, err error)
}

// AttestorConfig configures the sigstore workload attestor.
type AttestorConfig struct {
	// Verifier checks the signatures. Required.
	Verifier *Verifier
	// Images finds a process's image. Required.
	Images ImageResolver
}

// Attestor is the sigstore workload attestor: the selectors of the
// signatures on the image of the caller's container. It is safe for
// concurrent use.
type Attestor struct {
	verifier *Verifier
	images   ImageResolver
}

// NewAttestor returns the sigstore workload attestor.
func NewAttestor(cfg AttestorConfig) (*Attestor, error) {
	var errs []error
	if cfg.Verifier == nil {
		errs = append(errs, errors.New("Verifier: must be set"))
	}
	if cfg.Images == nil {
		errs = append(errs, errors.New("Images: must be set (the container attestor)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("sigstore attestor: %w", err)
	}
	return &Attestor{verifier: cfg.Verifier, images: cfg.Images}, nil
}

// Type returns "sigstore".
func (a *Attestor) Type() string { return Type }

// Attest returns the selectors of the signatures on the image of pid's
// container; none for a process outside containers, an image of unknown
// digest, or an unsigned image.
func (a *Attestor) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	ref, ok, err := a.images.ImageRef(ctx, pid)
	if err != nil {
		return nil, fmt.Errorf("sigstore attestor: pid %d: %w", pid, err)
	}
	if !ok {
		return nil, nil
	}
	return a.verifier.Selectors(ctx, ref)
}
