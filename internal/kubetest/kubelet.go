package kubetest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// KubeletOptions configure a fake kubelet.
type KubeletOptions struct {
	// ReadOnly serves plain HTTP without authentication, as the kubelet's
	// read-only port (10255) does.
	ReadOnly bool
}

// Kubelet is a fake kubelet serving GET /pods for one node: the pods the
// cluster has scheduled there, as a v1 PodList. Over HTTPS it
// authenticates bearer tokens with the cluster and authorizes them as the
// kubelet does (get nodes/pods, falling back to get nodes/proxy).
type Kubelet struct {
	c      *Cluster
	node   string
	srv    *httptest.Server
	caFile string

	mu      sync.Mutex
	hide    int
	fetches int
}

// StartKubelet starts a kubelet for node, stopped at cleanup. Its serving
// certificate is for loopback and the node's name.
func (c *Cluster) StartKubelet(t testing.TB, node string, opts KubeletOptions) *Kubelet {
	t.Helper()
	k := &Kubelet{c: c, node: node}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /pods", k.handlePods)
	if opts.ReadOnly {
		k.srv = httptest.NewServer(mux)
		t.Cleanup(k.srv.Close)
		return k
	}
	ca := newServingCA(t)
	k.caFile = ca.writeFile(t, t.TempDir(), "kubelet-ca.pem")
	k.srv = startTLS(t, ca, mux, node)
	return k
}

// URL is the kubelet's base URL.
func (k *Kubelet) URL() string { return k.srv.URL }

// CAFile is the PEM file of the CA of the kubelet's serving certificate
// ("" on the read-only port).
func (k *Kubelet) CAFile() string { return k.caFile }

// Fetches counts the /pods answers given.
func (k *Kubelet) Fetches() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetches
}

// HideContainerStatuses makes the next n answers leave out every
// container status, as a kubelet does before it has synced a new pod's
// status: the containers run, but the kubelet cannot say which they are.
func (k *Kubelet) HideContainerStatuses(n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hide = n
}

func (k *Kubelet) handlePods(w http.ResponseWriter, r *http.Request) {
	if k.caFile != "" && !k.authorize(w, r) {
		return
	}
	pods := k.c.podsOn(k.node)
	k.mu.Lock()
	k.fetches++
	hide := k.hide > 0
	if hide {
		k.hide--
	}
	k.mu.Unlock()
	if hide {
		for i := range pods {
			pods[i].Status.ContainerStatuses = nil
			pods[i].Status.InitContainerStatuses = nil
			pods[i].Status.EphemeralContainerStatuses = nil
		}
	}
	writeObject(w, http.StatusOK, podList(pods))
}

// authorize answers as the kubelet's webhook authn/authz does: 401 for a
// bad token, 403 when neither nodes/pods nor nodes/proxy may be read.
func (k *Kubelet) authorize(w http.ResponseWriter, r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	user, _, err := k.c.review(token, nil)
	if !ok || err != nil {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return false
	}
	attr := Request{User: user.Username, Verb: "get", Resource: "nodes", Subresource: "pods", Name: k.node}
	if k.c.authorize(attr) {
		return true
	}
	attr.Subresource = "proxy"
	if k.c.authorize(attr) {
		return true
	}
	http.Error(w, "Forbidden (user="+user.Username+", verb=get, resource=nodes, subresource(s)=[pods proxy])", http.StatusForbidden)
	return false
}
