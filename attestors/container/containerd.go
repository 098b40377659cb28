package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/image-spec/identity"

	"github.com/nhid/nhid/pkg/telemetry"
)

// errUnknownContainer means the runtime has no container of that ID (it
// belongs to another runtime or another namespace, or is gone).
var errUnknownContainer = errors.New("container unknown to the runtime")

// containerdRuntime asks containerd about containers of one namespace.
type containerdRuntime struct {
	client    *containerd.Client
	namespace string
	platform  platforms.MatchComparer
	log       *slog.Logger
}

// newContainerdRuntime connects lazily: the agent starts even while
// containerd is down, and attestations fail until it is up.
func newContainerdRuntime(socket, namespace string, timeout time.Duration, log *slog.Logger) (*containerdRuntime, error) {
	c, err := containerd.New(socket, containerd.WithDefaultNamespace(namespace), containerd.WithTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("containerd client for %s: %w", socket, err)
	}
	return &containerdRuntime{client: c, namespace: namespace, platform: platforms.Default(), log: log}, nil
}

// close releases the connection.
func (r *containerdRuntime) close() error { return r.client.Close() }

// inspect returns what containerd records about container id.
func (r *containerdRuntime) inspect(ctx context.Context, id string) (Info, error) {
	ctx = namespaces.WithNamespace(ctx, r.namespace)
	c, err := r.client.ContainerService().Get(ctx, id)
	if errdefs.IsNotFound(err) {
		return Info{}, errUnknownContainer
	}
	if err != nil {
		return Info{}, fmt.Errorf("containerd: get container %s: %w", id, err)
	}
	info := Info{ID: c.ID, ImageName: c.Image, Labels: c.Labels}
	if c.Image == "" {
		return info, nil
	}
	digest, err := r.imageDigest(ctx, c)
	if err != nil {
		return Info{}, err
	}
	info.ImageDigest = digest
	return info, nil
}

// imageDigest returns the digest the container's image name resolves to
// (an index or a manifest: what the registry, a pull by digest and cosign
// call the image), or "" when that image is not what the container runs.
//
// A container records its image by name, and a name can be re-pointed
// (a new pull of the tag) while the container keeps running the old
// filesystem. So the digest is given only when the container's root
// filesystem snapshot was made from this image's layers: the snapshot's
// parent is the chain ID of the image's layers.
func (r *containerdRuntime) imageDigest(ctx context.Context, c containers.Container) (string, error) {
	log := r.log.With(telemetry.ContainerID, c.ID, telemetry.Image, c.Image)
	img, err := r.client.ImageService().Get(ctx, c.Image)
	if errdefs.IsNotFound(err) {
		log.Info("container image is no longer in containerd; leaving out its digest")
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("containerd: get image %s: %w", c.Image, err)
	}
	if pinned, ok := pinnedDigest(c.Image); ok && pinned != img.Target.Digest.String() {
		log.Warn("image name pins a digest its record does not point at; leaving out its digest",
			telemetry.Digest, img.Target.Digest.String())
		return "", nil
	}
	if c.SnapshotKey == "" || c.Snapshotter == "" {
		log.Info("container has no root filesystem snapshot to tie it to its image; leaving out its digest")
		return "", nil
	}
	diffIDs, err := img.RootFS(ctx, r.client.ContentStore(), r.platform)
	if err != nil {
		return "", fmt.Errorf("containerd: layers of image %s: %w", c.Image, err)
	}
	snap, err := r.client.SnapshotService(c.Snapshotter).Stat(ctx, c.SnapshotKey)
	if err != nil {
		return "", fmt.Errorf("containerd: snapshot %s of container %s: %w", c.SnapshotKey, c.ID, err)
	}
	if want := identity.ChainID(diffIDs).String(); len(diffIDs) > 0 && snap.Parent != want {
		log.Warn("container's root filesystem is not its image's (the name now points elsewhere); leaving out its digest",
			"snapshot_parent", snap.Parent, "image_chain_id", want)
		return "", nil
	}
	return img.Target.Digest.String(), nil
}

// pinnedDigest returns the digest a "name@sha256:<hex>" image name pins.
func pinnedDigest(imageName string) (string, bool) {
	ref, err := name.NewDigest(imageName)
	if err != nil {
		return "", false
	}
	return ref.DigestStr(), true
}
