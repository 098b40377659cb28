// Package kubetest runs stand-ins for a Kubernetes API server and kubelets
// for the tests of nhid's Kubernetes attestors. Neither can run here, so
// the stand-ins speak their real wire formats instead: HTTPS with a CA of
// their own, JSON of k8s.io/api types, Status objects for errors, bearer
// tokens that are RS256 JWTs shaped like projected service-account tokens
// and checked as the API server checks them (signature, expiry, audience,
// the bound pod still existing), the TokenReview API, and, on request, RBAC
// enforcement of every call with the authorization attributes the real
// servers derive (including the kubelet's nodes/pods → nodes/proxy check).
package kubetest

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Issuer is the issuer of the cluster's tokens and the audience of tokens
// meant for the API server itself, as on a default cluster.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// Request is one authenticated call, with the attributes an authorizer
// sees.
type Request struct {
	User        string
	Verb        string
	APIGroup    string
	Resource    string
	Subresource string
	Namespace   string
	Name        string
	// Allowed is the authorization decision.
	Allowed bool
}

// Cluster is a fake API server with its pods, nodes and token signer.
// It is safe for concurrent use.
type Cluster struct {
	ca     *servingCA
	srv    *httptest.Server
	caFile string
	key    *rsa.PrivateKey
	signer jose.Signer

	mu       sync.Mutex
	pods     map[string]*corev1.Pod // by namespace/name
	nodes    map[string]*corev1.Node
	rules    map[string][]rbacv1.PolicyRule // nil: every authenticated call is allowed
	requests []Request
	// audienceUnaware makes TokenReview ignore the audiences asked for, as
	// API servers before audience support did.
	audienceUnaware bool
}

// NewCluster starts a fake API server, stopped at cleanup.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("kubetest: generate signing key: %v", err)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "kubetest")
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, opts)
	if err != nil {
		t.Fatalf("kubetest: signer: %v", err)
	}
	c := &Cluster{
		ca: newServingCA(t), key: key, signer: signer,
		pods: map[string]*corev1.Pod{}, nodes: map[string]*corev1.Node{},
	}
	c.caFile = c.ca.writeFile(t, t.TempDir(), "apiserver-ca.pem")
	c.srv = startTLS(t, c.ca, c.apiHandler(), "kubernetes.default.svc")
	return c
}

// URL is the API server's base URL.
func (c *Cluster) URL() string { return c.srv.URL }

// CAFile is a PEM file of the CA that signed the API server's certificate.
func (c *Cluster) CAFile() string { return c.caFile }

// AddNode stores a copy of node, giving it a UID if it has none, and
// returns the stored copy.
func (c *Cluster) AddNode(node *corev1.Node) *corev1.Node {
	n := node.DeepCopy()
	if n.UID == "" {
		n.UID = types.UID(uuid.NewString())
	}
	n.CreationTimestamp = metav1.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[n.Name] = n
	return n.DeepCopy()
}

// AddPod stores a copy of pod, giving it a UID and the Running phase if it
// has none, and returns the stored copy.
func (c *Cluster) AddPod(pod *corev1.Pod) *corev1.Pod {
	p := pod.DeepCopy()
	if p.UID == "" {
		p.UID = types.UID(uuid.NewString())
	}
	if p.Status.Phase == "" {
		p.Status.Phase = corev1.PodRunning
	}
	p.CreationTimestamp = metav1.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pods[p.Namespace+"/"+p.Name] = p
	return p.DeepCopy()
}

// DeletePod removes a pod; tokens bound to it stop authenticating.
func (c *Cluster) DeletePod(namespace, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pods, namespace+"/"+name)
}

// DeleteNode removes a node.
func (c *Cluster) DeleteNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, name)
}

// SetAudienceUnaware makes TokenReview accept a token whatever audiences
// the review asks for and confirm none, as an API server without audience
// support does; a careful client must refuse such an answer.
func (c *Cluster) SetAudienceUnaware(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.audienceUnaware = on
}

func (c *Cluster) isAudienceUnaware() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.audienceUnaware
}

func (c *Cluster) pod(namespace, name string) (*corev1.Pod, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pods[namespace+"/"+name]
	if !ok {
		return nil, false
	}
	return p.DeepCopy(), true
}

func (c *Cluster) node(name string) (*corev1.Node, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[name]
	if !ok {
		return nil, false
	}
	return n.DeepCopy(), true
}

// podsOn returns copies of the pods scheduled to node, in name order.
func (c *Cluster) podsOn(node string) []corev1.Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []corev1.Pod
	for _, p := range c.pods {
		if p.Spec.NodeName == node {
			out = append(out, *p.DeepCopy())
		}
	}
	sortPods(out)
	return out
}

// EnforceRBAC makes every later call subject to rules, keyed by user name
// (system:serviceaccount:<ns>:<name>); a user without rules may do nothing.
func (c *Cluster) EnforceRBAC(rules map[string][]rbacv1.PolicyRule) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rules = map[string][]rbacv1.PolicyRule{}
	for user, rs := range rules {
		for _, r := range rs {
			c.rules[user] = append(c.rules[user], *r.DeepCopy())
		}
	}
}

// Requests returns the authenticated calls so far, on the API server and
// its kubelets, in order.
func (c *Cluster) Requests() []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Request(nil), c.requests...)
}

// authorize decides and records one call.
func (c *Cluster) authorize(r Request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.Allowed = c.rules == nil || allows(c.rules[r.User], r)
	c.requests = append(c.requests, r)
	return r.Allowed
}

// serviceAccountUID is stable per service account, as a stored one's is.
func serviceAccountUID(namespace, name string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("serviceaccount/"+namespace+"/"+name)).String()
}
