// Package container is the container workload attestor: it finds the
// container a process runs in from the kernel's record of its cgroups and
// asks the container runtime (containerd, over its socket) what that
// container is.
//
// Selectors (type "container"):
//
//	id:<64 hex container ID>
//	image_name:<image name as the container records it>
//	image_digest:sha256:<hex>   the digest the image name resolved to
//	label:<key>:<value>         one per container label
//
// A process outside any container gets no selectors and no error. The
// attestor also answers Lookup and ImageRef for others that describe the
// container's image, such as the sigstore attestor.
package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nhid/nhid/attestors/internal/ttlcache"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Type is the selector type this attestor produces.
const Type = "container"

// Defaults for the fields Config leaves zero.
const (
	DefaultContainerdSocket = "/run/containerd/containerd.sock"
	DefaultNamespace        = "default"
	DefaultCacheSize        = 4096
	DefaultCacheTTL         = time.Minute
	DefaultLookupTimeout    = 5 * time.Second
)

// Config configures the container attestor.
type Config struct {
	// Log defaults to slog.Default().
	Log *slog.Logger
	// Clock expires cache entries; defaults to the wall clock.
	Clock clock.Clock
	// ContainerdSocket is containerd's gRPC socket; default
	// DefaultContainerdSocket.
	ContainerdSocket string
	// Namespace is the containerd namespace the containers are in
	// ("default" for ctr and the Go client, "k8s.io" for Kubernetes,
	// "moby" for Docker); default DefaultNamespace.
	Namespace string
	// CacheSize bounds how many containers' descriptions are remembered;
	// default DefaultCacheSize.
	CacheSize int
	// CacheTTL is how long a description is trusted before containerd is
	// asked again (labels and image names of a container are mutable
	// through containerd's API); default DefaultCacheTTL.
	CacheTTL time.Duration
	// LookupTimeout bounds one question to containerd; default
	// DefaultLookupTimeout.
	LookupTimeout time.Duration
	// ProcRoot is where procfs is mounted; default /proc.
	ProcRoot string
}

// Info is what the runtime records about a container.
type Info struct {
	// ID is the container ID (64 lowercase hex characters).
	ID string
	// ImageName is the image the container was created from, as recorded
	// ("registry.example.com/app:1.2"); empty if none was recorded.
	ImageName string
	// ImageDigest is "sha256:<hex>", the digest ImageName resolved to when
	// the image was pulled, given only when the container's root
	// filesystem is that image's; empty otherwise.
	ImageDigest string
	// Labels are the container's labels.
	Labels map[string]string
}

// Attestor is the container workload attestor. It is safe for concurrent
// use; Close releases its runtime connection.
type Attestor struct {
	log           *slog.Logger
	procRoot      string
	lookupTimeout time.Duration
	cache         *ttlcache.Cache[Info]
	runtime       *containerdRuntime

	// inspect asks the runtime about a container; a test seam.
	inspect func(ctx context.Context, id string) (Info, error)
}

// New returns a container attestor. It does not contact containerd: the
// agent starts while containerd is down, and attestations of container
// processes fail until it is up.
func New(cfg Config) (*Attestor, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("container attestor: %w", err)
	}
	log := cfg.Log.With(telemetry.Attestor, Type)
	cache, err := ttlcache.New[Info](cfg.CacheSize, cfg.CacheTTL, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("container attestor: %w", err)
	}
	rt, err := newContainerdRuntime(cfg.ContainerdSocket, cfg.Namespace, cfg.LookupTimeout, log)
	if err != nil {
		return nil, fmt.Errorf("container attestor: %w", err)
	}
	return &Attestor{
		log:           log,
		procRoot:      filepath.Clean(cfg.ProcRoot),
		lookupTimeout: cfg.LookupTimeout,
		cache:         cache,
		runtime:       rt,
		inspect:       rt.inspect,
	}, nil
}

func (cfg *Config) setDefaults() error {
	var errs []error
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ContainerdSocket == "" {
		cfg.ContainerdSocket = DefaultContainerdSocket
	}
	if !filepath.IsAbs(cfg.ContainerdSocket) {
		errs = append(errs, fmt.Errorf("ContainerdSocket: must be an absolute path, got %q", cfg.ContainerdSocket))
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if !filepath.IsAbs(cfg.ProcRoot) {
		errs = append(errs, fmt.Errorf("ProcRoot: must be an absolute path, got %q", cfg.ProcRoot))
	}
	errs = append(errs,
		defaultPositive(&cfg.CacheSize, DefaultCacheSize, "CacheSize"),
		defaultPositive(&cfg.CacheTTL, DefaultCacheTTL, "CacheTTL"),
		defaultPositive(&cfg.LookupTimeout, DefaultLookupTimeout, "LookupTimeout"))
	return errors.Join(errs...)
}

func defaultPositive[T int | time.Duration](v *T, def T, name string) error {
	switch {
	case *v < 0:
		return fmt.Errorf("%s: must not be negative, got %v", name, *v)
	case *v == 0:
		*v = def
	}
	return nil
}

// Close releases the connection to containerd.
func (a *Attestor) Close() error { return a.runtime.close() }

// Type returns "container".
func (a *Attestor) Type() string { return Type }

// Attest returns the selectors of the container process pid runs in, none
// if it runs in none.
func (a *Attestor) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	info, ok, err := a.Lookup(ctx, pid)
	if err != nil || !ok {
		return nil, err
	}
	return a.selectors(pid, info), nil
}

// Lookup describes the container process pid runs in; ok is false when it
// runs in none. A container the runtime does not know (another runtime's,
// or one in another namespace) is described by its ID alone.
func (a *Attestor) Lookup(ctx context.Context, pid int32) (info Info, ok bool, err error) {
	id, err := a.containerIDOf(pid)
	if err != nil || id == "" {
		return Info{}, false, err
	}
	info, err = a.cache.Do(ctx, id, a.lookupTimeout, func(ctx context.Context) (Info, bool, error) {
		info, err := a.inspect(ctx, id)
		if errors.Is(err, errUnknownContainer) {
			a.log.Debug("container is unknown to containerd; describing it by its ID alone", telemetry.ContainerID, id)
			return Info{ID: id}, true, nil
		}
		return info, err == nil, err
	})
	if err != nil {
		return Info{}, false, fmt.Errorf("container attestor: pid %d: %w", pid, err)
	}
	return info, true, nil
}

// ImageRef returns "<repository>@<digest>" of the image of the container
// process pid runs in; ok is false when it runs in none or its image
// digest is not known.
func (a *Attestor) ImageRef(ctx context.Context, pid int32) (ref string, ok bool, err error) {
	info, ok, err := a.Lookup(ctx, pid)
	if err != nil || !ok || info.ImageDigest == "" {
		return "", false, err
	}
	ref, err = DigestRef(info.ImageName, info.ImageDigest)
	if err != nil {
		return "", false, fmt.Errorf("container attestor: pid %d: %w", pid, err)
	}
	return ref, true, nil
}

// containerIDOf reads the container ID of pid from procfs; "" when it is
// in no container.
func (a *Attestor) containerIDOf(pid int32) (string, error) {
	id, err := IDFromPID(a.procRoot, pid)
	if err != nil {
		return "", fmt.Errorf("container attestor: %w", err)
	}
	return id, nil
}
