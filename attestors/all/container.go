package all

import (
	"errors"
	"fmt"

	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/pkg/attestor"
)

// appendContainerAttestors adds the container attestor and the sigstore
// attestor on top of it, each when configured. They share one container
// attestor, so a caller's container is looked up in containerd once (its
// cache coalesces the two attestors' concurrent questions).
func appendContainerAttestors(as []attestor.Workload, cfg WorkloadConfig) ([]attestor.Workload, error) {
	if cfg.Container == nil {
		if cfg.Sigstore != nil {
			return nil, fmt.Errorf("workload attestor %s: needs the %s attestor to find images: configure it too", sigstore.Type, container.Type)
		}
		return as, nil
	}
	cc := *cfg.Container
	if cc.Log == nil {
		cc.Log = cfg.Log
	}
	ca, err := container.New(cc)
	if err != nil {
		return nil, fmt.Errorf("workload attestor %s: %w", container.Type, err)
	}
	as = append(as, ca)
	if cfg.Sigstore == nil {
		return as, nil
	}
	sc := *cfg.Sigstore
	if sc.Log == nil {
		sc.Log = cfg.Log
	}
	v, err := sigstore.New(sc)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("workload attestor %s: %w", sigstore.Type, err), ca.Close())
	}
	sa, err := sigstore.NewAttestor(sigstore.AttestorConfig{Verifier: v, Images: withPodImages(ca, as)})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("workload attestor %s: %w", sigstore.Type, err), ca.Close())
	}
	return append(as, sa), nil
}
