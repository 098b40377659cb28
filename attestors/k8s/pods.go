package k8s

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nhid/nhid/attestors/internal/kubeclient"
	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/telemetry"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
)

// errNotInPodList marks a container the kubelet does not list.
var errNotInPodList = errors.New("container is not in the kubelet's pod list")

// podContainer is one container of one pod, as the kubelet lists it.
type podContainer struct {
	pod *corev1.Pod
	// status is the container's status; spec is its spec, nil if the pod
	// spec has no container of that name (it always should).
	status *corev1.ContainerStatus
	spec   *corev1.Container
}

// podIndex is one fetched pod list, indexed by container ID.
type podIndex struct {
	gen        uint64
	fetchedAt  time.Time
	containers map[string]podContainer
}

// podCache holds the latest pod list. Concurrent fetches are shared.
type podCache struct {
	client  *kubeclient.Client
	ttl     time.Duration
	timeout time.Duration
	clock   clock.Clock
	flights singleflight.Group

	mu      sync.Mutex
	cur     *podIndex
	lastGen uint64
}

func newPodCache(client *kubeclient.Client, ttl, timeout time.Duration, clk clock.Clock) *podCache {
	return &podCache{client: client, ttl: ttl, timeout: timeout, clock: clk}
}

// get returns a pod list of generation minGen or later that is younger
// than the TTL, fetching one if the cache holds none; fetched says whether
// it had to.
func (c *podCache) get(ctx context.Context, minGen uint64, nodeName string) (idx *podIndex, fetched bool, err error) {
	if idx := c.fresh(minGen); idx != nil {
		return idx, false, nil
	}
	for {
		ch := c.flights.DoChan("pods", func() (any, error) {
			// A caller that missed just before the previous fetch finished
			// must not fetch again.
			if idx := c.fresh(minGen); idx != nil {
				return idx, nil
			}
			// The fetch is not tied to the first caller's context, so that
			// caller giving up does not fail the others waiting on it.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
			defer cancel()
			return c.fetch(fctx, nodeName)
		})
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case r := <-ch:
			if r.Err != nil {
				return nil, false, r.Err
			}
			// A flight begun by a caller content with an older list may
			// have answered from the cache; then ask again, which fetches.
			if idx := r.Val.(*podIndex); idx.gen >= minGen {
				return idx, true, nil
			}
		}
	}
}

func (c *podCache) fresh(minGen uint64) *podIndex {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && c.cur.gen >= minGen && c.clock.Now().Sub(c.cur.fetchedAt) < c.ttl {
		return c.cur
	}
	return nil
}

func (c *podCache) fetch(ctx context.Context, nodeName string) (*podIndex, error) {
	started := c.clock.Now()
	var list corev1.PodList
	if err := c.client.Get(ctx, "/pods", corev1.SchemeGroupVersion.WithKind("PodList"), &list); err != nil {
		if kubeclient.IsAuthError(err) {
			return nil, fmt.Errorf("the kubelet refused the agent's credentials "+
				"(check token_file and that its service account may get nodes/pods): %w", err)
		}
		return nil, fmt.Errorf("list pods: %w", err)
	}
	idx := indexPods(list.Items, nodeName)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastGen++
	idx.gen, idx.fetchedAt = c.lastGen, started
	c.cur = idx
	return idx, nil
}

// indexPods maps the ID of every container, init container and ephemeral
// container with a status to its pod.
func indexPods(pods []corev1.Pod, nodeName string) *podIndex {
	idx := &podIndex{containers: map[string]podContainer{}}
	for i := range pods {
		p := &pods[i]
		if nodeName != "" && p.Spec.NodeName != nodeName {
			continue
		}
		for _, list := range [][]corev1.ContainerStatus{
			p.Status.ContainerStatuses, p.Status.InitContainerStatuses, p.Status.EphemeralContainerStatuses,
		} {
			for j := range list {
				st := &list[j]
				if id, ok := runtimeContainerID(st.ContainerID); ok {
					idx.containers[id] = podContainer{pod: p, status: st, spec: specOf(p, st.Name)}
				}
			}
		}
	}
	return idx
}

// runtimeContainerID strips the runtime from "<runtime>://<id>".
func runtimeContainerID(s string) (string, bool) {
	_, id, ok := strings.Cut(s, "://")
	return id, ok && id != ""
}

// specOf returns the spec of the pod's container called name.
func specOf(p *corev1.Pod, name string) *corev1.Container {
	for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i]
			}
		}
	}
	for i := range p.Spec.EphemeralContainers {
		if c := &p.Spec.EphemeralContainers[i]; c.Name == name {
			return (*corev1.Container)(&c.EphemeralContainerCommon)
		}
	}
	return nil
}

// find returns the pod container with ID id. A container missing from the
// list is looked for in fresh lists, up to maxRetries of them, with a
// pause between them: its status can lag behind its start. A container
// that was never found is, for a while, looked for in one list only.
func (a *Attestor) find(ctx context.Context, id string) (podContainer, error) {
	retries := a.maxRetries
	if _, gaveUp := a.gaveUp.Get(id); gaveUp {
		retries = 0
	}
	var minGen uint64
	for attempt := 0; ; attempt++ {
		idx, fetched, err := a.pods.get(ctx, minGen, a.nodeName)
		if err != nil {
			return podContainer{}, err
		}
		if c, ok := idx.containers[id]; ok {
			return c, nil
		}
		if attempt >= retries {
			a.gaveUp.Add(id, struct{}{})
			return podContainer{}, fmt.Errorf("container %s: %w (looked in %d lists)", id, errNotInPodList, attempt+1)
		}
		// A list from the cache may just be older than the container, so
		// the first retry needs no pause; a list fetched now does.
		if fetched {
			if err := sleep(ctx, a.retryInterval); err != nil {
				return podContainer{}, err
			}
		}
		a.log.Debug("container not in the pod list yet; fetching it again", telemetry.ContainerID, id, "attempt", attempt+1)
		minGen = idx.gen + 1
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
