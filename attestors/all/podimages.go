package all

import (
	"context"
	"errors"
	"fmt"

	"github.com/nhid/nhid/attestors/k8s"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/pkg/attestor"
)

// imageChain finds a caller's image with each resolver in turn: the first
// that knows the image answers. The container attestor (containerd's own
// record) comes first; the k8s attestor (the image ID the kubelet reports)
// covers pods, whose CRI containers carry no image name in containerd.
type imageChain []sigstore.ImageResolver

// ImageRef implements sigstore.ImageResolver. Failures of some resolvers
// do not hide another's answer; they are returned only when none knows.
func (c imageChain) ImageRef(ctx context.Context, pid int32) (string, bool, error) {
	var errs []error
	for _, r := range c {
		ref, ok, err := r.ImageRef(ctx, pid)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok:
			return ref, true, nil
		}
	}
	return "", false, errors.Join(errs...)
}

// withPodImages adds the k8s attestor among as, if any, after images.
func withPodImages(images sigstore.ImageResolver, as []attestor.Workload) sigstore.ImageResolver {
	if ka := k8sAttestor(as); ka != nil {
		return imageChain{images, ka}
	}
	return images
}

func k8sAttestor(as []attestor.Workload) *k8s.Attestor {
	for _, a := range as {
		if ka, ok := a.(*k8s.Attestor); ok {
			return ka
		}
	}
	return nil
}

// appendPodSigstore adds the sigstore attestor over the images of pod
// containers, for nodes where the k8s attestor runs without the container
// attestor.
func appendPodSigstore(as []attestor.Workload, cfg WorkloadConfig, ka *k8s.Attestor) ([]attestor.Workload, error) {
	sc := *cfg.Sigstore
	if sc.Log == nil {
		sc.Log = cfg.Log
	}
	v, err := sigstore.New(sc)
	if err != nil {
		return nil, fmt.Errorf("workload attestor %s: %w", sigstore.Type, err)
	}
	sa, err := sigstore.NewAttestor(sigstore.AttestorConfig{Verifier: v, Images: ka})
	if err != nil {
		return nil, fmt.Errorf("workload attestor %s: %w", sigstore.Type, err)
	}
	return append(as, sa), nil
}
