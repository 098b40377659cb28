package k8s

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
)

// selectors describes a pod container.
func (a *Attestor) selectors(pid int32, c podContainer) []selector.Selector {
	b := builder{log: a.log.With(telemetry.PID, pid, telemetry.PodNamespace, c.pod.Namespace, telemetry.PodName, c.pod.Name)}
	p := c.pod
	b.add("ns", p.Namespace)
	b.add("sa", p.Spec.ServiceAccountName)
	b.add("pod-name", p.Name)
	b.add("pod-uid", string(p.UID))
	b.add("node-name", p.Spec.NodeName)
	for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
		b.add("pod-label", k+":"+p.Labels[k])
	}
	b.add("container-name", c.status.Name)
	images := []string{c.status.Image, c.status.ImageID}
	if c.spec != nil {
		images = append(images, c.spec.Image)
	}
	for _, img := range images {
		b.add("container-image", img)
	}
	return b.sels
}

// builder collects selectors. An empty value (a pod without a service
// account name in the kubelet's copy) is no selector, and a value that
// cannot form one is left out and logged: the others are still true.
type builder struct {
	log  *slog.Logger
	sels []selector.Selector
}

func (b *builder) add(kind, value string) {
	if value == "" {
		return
	}
	s, err := selector.New(Type, kind+":"+value)
	if err != nil {
		b.log.Warn("leaving out unrepresentable selector", "kind", kind, telemetry.Error, err)
		return
	}
	if !slices.Contains(b.sels, s) {
		b.sels = append(b.sels, s)
	}
}

// imageRef turns a container status's imageID into a canonical digest
// reference. Runtimes report "repo@sha256:…" (containerd, CRI-O) or
// "docker-pullable://repo@sha256:…" (Docker); a bare "sha256:…" is the
// image's config digest, which no signature names.
func imageRef(imageID string) (string, bool, error) {
	s := strings.TrimPrefix(imageID, "docker-pullable://")
	name, digest, ok := strings.Cut(s, "@")
	if !ok || name == "" {
		return "", false, nil
	}
	ref, err := container.DigestRef(name, digest)
	if err != nil {
		return "", false, fmt.Errorf("k8s attestor: image ID %q: %w", imageID, err)
	}
	return ref, true, nil
}
