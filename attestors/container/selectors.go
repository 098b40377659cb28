package container

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
)

// selectors turns a container's description into selectors. A value that
// cannot form one is left out and logged: the others are still true.
func (a *Attestor) selectors(pid int32, info Info) []selector.Selector {
	log := a.log.With(telemetry.PID, pid, telemetry.ContainerID, info.ID)
	var sels []selector.Selector
	add := func(kind, value string) {
		s, err := selector.New(Type, kind+":"+value)
		if err != nil {
			log.Warn("leaving out unrepresentable selector", "kind", kind, telemetry.Error, err)
			return
		}
		sels = append(sels, s)
	}
	add("id", info.ID)
	if info.ImageName != "" {
		add("image_name", info.ImageName)
	}
	if info.ImageDigest != "" {
		add("image_digest", info.ImageDigest)
	}
	for _, k := range slices.Sorted(maps.Keys(info.Labels)) {
		if !labelKeyOK(k, log) {
			continue
		}
		add("label", k+":"+info.Labels[k])
	}
	return sels
}

// labelKeyOK rejects label keys that would make label selectors ambiguous:
// "label:a:b:c" must mean key "a", value "b:c", so a key may hold no colon.
func labelKeyOK(k string, log *slog.Logger) bool {
	if k == "" || strings.Contains(k, ":") {
		log.Debug("leaving out a label whose key is empty or holds a colon", "label", k)
		return false
	}
	return true
}

// DigestRef returns "<repository>@<digest>" for an image name (with or
// without tag or digest) and a manifest or index digest, the repository in
// its canonical form ("nginx" is "index.docker.io/library/nginx").
func DigestRef(imageName, imageDigest string) (string, error) {
	d, err := digest.Parse(imageDigest)
	if err != nil {
		return "", fmt.Errorf("image digest %q: %w", imageDigest, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("image digest %q: only sha256 is supported", imageDigest)
	}
	ref, err := name.ParseReference(imageName)
	if err != nil {
		return "", fmt.Errorf("image name %q: %w", imageName, err)
	}
	return ref.Context().Name() + "@" + d.String(), nil
}
