// Package k8s is the Kubernetes workload attestor: it finds the container
// a process runs in (from its cgroups, as attestors/container reads them),
// finds that container in the pod list of the node's kubelet, and describes
// the pod and the container.
//
// Selectors (type "k8s"):
//
//	ns:<namespace>  sa:<service account>  pod-name:<name>  pod-uid:<uid>
//	pod-label:<key>:<value>  container-name:<name>  node-name:<node>
//	container-image:<image>   the image as the pod spec and the runtime
//	                          name it, and the runtime's image ID (digest)
//
// The kubelet is asked over HTTPS (its authenticated port, 10250) with the
// agent's service-account token and its certificate checked against a
// pinned CA; the unauthenticated read-only port is used only when
// configured. The pod list is cached briefly; a container the list does
// not show yet (the kubelet reports a new container's status a moment
// after it starts) is looked for again in fresh lists, a bounded number of
// times. A process in no container gets no selectors and no error.
//
// The attestor also answers ImageRef, the digest reference of the image a
// pod container runs, for attestors that verify images, such as sigstore.
package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/attestors/internal/kubeclient"
	"github.com/nhid/nhid/attestors/internal/ttlcache"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/telemetry"
)

// Type is the selector type this attestor produces.
const Type = "k8s"

// Defaults for the fields Config leaves zero.
const (
	DefaultKubeletURL     = "https://127.0.0.1:10250"
	DefaultTokenFile      = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultPodListTTL     = 2 * time.Second
	DefaultRetryInterval  = 250 * time.Millisecond
	DefaultMaxRetries     = 20
	DefaultRequestTimeout = 5 * time.Second
	// giveUpTTL is how long a container that never showed up in the pod
	// list is looked for without retries (it is most likely not a pod's:
	// a container started on the node by other means).
	giveUpTTL = time.Minute
)

// Config configures the k8s attestor.
type Config struct {
	// Log defaults to slog.Default().
	Log *slog.Logger
	// Clock ages the pod list cache; defaults to the wall clock.
	Clock clock.Clock
	// KubeletURL is the kubelet's authenticated HTTPS endpoint; default
	// DefaultKubeletURL (the agent pod runs with hostNetwork).
	KubeletURL string
	// KubeletCAFile is the PEM bundle the kubelet's serving certificate
	// must chain to. Required unless InsecureSkipKubeletVerify or
	// ReadOnlyPort is set.
	KubeletCAFile string
	// KubeletServerName is the name the kubelet's certificate must carry
	// (usually the node name); default the host of KubeletURL.
	KubeletServerName string
	// InsecureSkipKubeletVerify accepts any kubelet certificate, for
	// kubelets with self-signed serving certificates. Prefer
	// KubeletCAFile with serverTLSBootstrap.
	InsecureSkipKubeletVerify bool
	// TokenFile is the agent's service-account token, sent to the kubelet;
	// default DefaultTokenFile. It is read for each request.
	TokenFile string
	// ReadOnlyPort, if not zero, asks the kubelet's unauthenticated
	// read-only port on the host of KubeletURL instead. Off by default:
	// most clusters disable that port.
	ReadOnlyPort int
	// NodeName, if set, is the node the agent runs on; pods the kubelet
	// lists for another node are ignored.
	NodeName string
	// PodListTTL is how long a fetched pod list answers attestations;
	// default DefaultPodListTTL.
	PodListTTL time.Duration
	// RetryInterval is the pause between fresh pod lists while a container
	// is not in them yet; default DefaultRetryInterval.
	RetryInterval time.Duration
	// MaxRetries bounds the fresh pod lists fetched for one container that
	// is not in the list; default DefaultMaxRetries.
	MaxRetries int
	// RequestTimeout bounds one kubelet request; default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// ProcRoot is where procfs is mounted; default /proc.
	ProcRoot string
}

// Attestor is the k8s workload attestor. It is safe for concurrent use.
type Attestor struct {
	log           *slog.Logger
	procRoot      string
	nodeName      string
	client        *kubeclient.Client
	pods          *podCache
	retryInterval time.Duration
	maxRetries    int
	gaveUp        *ttlcache.Cache[struct{}]

	// containerID finds the container of a pid ("" for none); a test seam.
	containerID func(pid int32) (string, error)
}

// New returns a k8s attestor. It does not contact the kubelet.
func New(cfg Config) (*Attestor, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("k8s attestor: %w", err)
	}
	client, err := kubeclient.New(cfg.clientConfig())
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: kubelet: %w", err)
	}
	gaveUp, err := ttlcache.New[struct{}](4096, giveUpTTL, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: %w", err)
	}
	log := cfg.Log.With(telemetry.Attestor, Type)
	if cfg.ReadOnlyPort != 0 {
		log.Warn("asking the kubelet's unauthenticated read-only port for pods", telemetry.Address, cfg.readOnlyURL())
	} else if cfg.InsecureSkipKubeletVerify {
		log.Warn("NOT verifying the kubelet's certificate: anyone who can take its address can claim pod identities")
	}
	a := &Attestor{
		log:           log,
		procRoot:      filepath.Clean(cfg.ProcRoot),
		nodeName:      cfg.NodeName,
		client:        client,
		retryInterval: cfg.RetryInterval,
		maxRetries:    cfg.MaxRetries,
		gaveUp:        gaveUp,
	}
	a.pods = newPodCache(client, cfg.PodListTTL, cfg.RequestTimeout, cfg.Clock)
	a.containerID = func(pid int32) (string, error) { return container.IDFromPID(a.procRoot, pid) }
	return a, nil
}

func (cfg *Config) setDefaults() error {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	setString(&cfg.KubeletURL, DefaultKubeletURL)
	setString(&cfg.TokenFile, DefaultTokenFile)
	setString(&cfg.ProcRoot, "/proc")
	errs := []error{
		positive(&cfg.PodListTTL, DefaultPodListTTL, "PodListTTL"),
		positive(&cfg.RetryInterval, DefaultRetryInterval, "RetryInterval"),
		positive(&cfg.MaxRetries, DefaultMaxRetries, "MaxRetries"),
		positive(&cfg.RequestTimeout, DefaultRequestTimeout, "RequestTimeout"),
	}
	if !filepath.IsAbs(cfg.ProcRoot) {
		errs = append(errs, fmt.Errorf("ProcRoot: must be an absolute path, got %q", cfg.ProcRoot))
	}
	if cfg.ReadOnlyPort < 0 || cfg.ReadOnlyPort > 65535 {
		errs = append(errs, fmt.Errorf("ReadOnlyPort: must be a port number, got %d", cfg.ReadOnlyPort))
	}
	return errors.Join(errs...)
}

func setString(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

func positive[T int | time.Duration](v *T, def T, name string) error {
	switch {
	case *v < 0:
		return fmt.Errorf("%s: must not be negative, got %v", name, *v)
	case *v == 0:
		*v = def
	}
	return nil
}

func (cfg *Config) clientConfig() kubeclient.Config {
	if cfg.ReadOnlyPort != 0 {
		return kubeclient.Config{URL: cfg.readOnlyURL(), AllowPlainHTTP: true, Timeout: cfg.RequestTimeout}
	}
	return kubeclient.Config{
		URL:                cfg.KubeletURL,
		CAFile:             cfg.KubeletCAFile,
		ServerName:         cfg.KubeletServerName,
		InsecureSkipVerify: cfg.InsecureSkipKubeletVerify,
		TokenFile:          cfg.TokenFile,
		Timeout:            cfg.RequestTimeout,
	}
}

// readOnlyURL is http://<host of KubeletURL>:<ReadOnlyPort>.
func (cfg *Config) readOnlyURL() string {
	host := "127.0.0.1"
	if u, err := url.Parse(cfg.KubeletURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.ReadOnlyPort))
}

// Type returns "k8s".
func (a *Attestor) Type() string { return Type }

// Close releases idle kubelet connections.
func (a *Attestor) Close() error {
	a.client.Close()
	return nil
}

// Attest returns the selectors of the pod container pid runs in; none if
// it runs in no container.
func (a *Attestor) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	c, ok, err := a.lookup(ctx, pid)
	if err != nil || !ok {
		return nil, err
	}
	return a.selectors(pid, c), nil
}

// ImageRef returns "<repository>@<digest>" of the image the pod container
// of pid runs, as the runtime reported it to the kubelet; ok is false when
// pid runs in no container or the runtime reported no repository digest
// (an image built or loaded on the node).
func (a *Attestor) ImageRef(ctx context.Context, pid int32) (ref string, ok bool, err error) {
	c, ok, err := a.lookup(ctx, pid)
	if err != nil || !ok {
		return "", false, err
	}
	return imageRef(c.status.ImageID)
}

// lookup finds the pod container of pid; ok is false when pid runs in no
// container.
func (a *Attestor) lookup(ctx context.Context, pid int32) (podContainer, bool, error) {
	if pid <= 0 {
		return podContainer{}, false, fmt.Errorf("k8s attestor: pid %d: must be positive", pid)
	}
	if err := ctx.Err(); err != nil {
		return podContainer{}, false, err
	}
	id, err := a.containerID(pid)
	if err != nil {
		return podContainer{}, false, fmt.Errorf("k8s attestor: pid %d: %w", pid, err)
	}
	if id == "" {
		return podContainer{}, false, nil
	}
	c, err := a.find(ctx, id)
	if err != nil {
		return podContainer{}, false, fmt.Errorf("k8s attestor: pid %d: %w", pid, err)
	}
	return c, true, nil
}
