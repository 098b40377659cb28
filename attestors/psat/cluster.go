package psat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"

	"github.com/nhid/nhid/attestors/internal/kubeclient"
	"github.com/nhid/nhid/pkg/telemetry"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Keys of the user info the API server gives a pod-bound token.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
	extraNodeUID  = "authentication.kubernetes.io/node-uid"
)

// cluster is one configured cluster and its API server client.
type cluster struct {
	name      string
	client    *kubeclient.Client
	audience  string
	allowed   []string
	labelKeys []string // nil: every label
}

func newCluster(name string, cfg ClusterConfig) (*cluster, error) {
	if err := CheckClusterName(name); err != nil {
		return nil, err
	}
	if len(cfg.ServiceAccountAllowList) == 0 {
		return nil, errors.New("ServiceAccountAllowList: must name at least one namespace:name")
	}
	for i, sa := range cfg.ServiceAccountAllowList {
		if err := CheckServiceAccount(sa); err != nil {
			return nil, fmt.Errorf("ServiceAccountAllowList[%d]: %w", i, err)
		}
	}
	client, err := kubeclient.New(kubeclient.Config{
		URL:       or(cfg.APIServerURL, DefaultAPIServerURL),
		CAFile:    or(cfg.CAFile, DefaultCAFile),
		TokenFile: or(cfg.TokenFile, DefaultTokenFile),
	})
	if err != nil {
		return nil, err
	}
	return &cluster{
		name:      name,
		client:    client,
		audience:  or(cfg.Audience, DefaultAudience),
		allowed:   slices.Clone(cfg.ServiceAccountAllowList),
		labelKeys: slices.Clone(cfg.AllowedNodeLabelKeys),
	}, nil
}

// CheckServiceAccount checks an allow-list item, "namespace:name".
func CheckServiceAccount(s string) error {
	ns, name, ok := strings.Cut(s, ":")
	if !ok {
		return fmt.Errorf("%q: must be namespace:name", s)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return fmt.Errorf("%q: namespace: %s", s, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("%q: name: %s", s, strings.Join(errs, "; "))
	}
	return nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// agentNode is what an attestation establishes about the agent.
type agentNode struct {
	ns, sa string
	pod    *corev1.Pod
	node   *corev1.Node
}

// attestation is one Attest call against one cluster.
type attestation struct {
	c   *cluster
	log *slog.Logger
	// detail says why evidence was refused, for the log only.
	detail error
}

// refuse records the detail of a refusal and returns its reason.
func (a *attestation) refuse(reason error, format string, args ...any) error {
	a.detail = fmt.Errorf(format, args...)
	return reason
}

// internal describes a failure that is not a verdict on the evidence.
func (a *attestation) internal(what string, err error) error {
	if kubeclient.IsAuthError(err) {
		return fmt.Errorf("k8s_psat cluster %s: %s: the API server refused this server's credentials "+
			"(check token_file and that its service account may create tokenreviews and get pods and nodes): %w", a.c.name, what, err)
	}
	return fmt.Errorf("k8s_psat cluster %s: %s: %w", a.c.name, what, err)
}

func (a *attestation) run(ctx context.Context, token string) (agentNode, error) {
	user, err := a.review(ctx, token)
	if err != nil {
		return agentNode{}, err
	}
	ns, sa, ok := serviceAccountName(user.Username)
	if !ok {
		return agentNode{}, a.refuse(errNotAllowed, "user %q is not a service account", user.Username)
	}
	a.log = a.log.With(telemetry.PodNamespace, ns, telemetry.ServiceAccount, sa)
	if !slices.Contains(a.c.allowed, ns+":"+sa) {
		return agentNode{}, a.refuse(errNotAllowed, "%s:%s is not in the allow list", ns, sa)
	}
	podName, podUID := extra(user, extraPodName), extra(user, extraPodUID)
	if podName == "" || podUID == "" {
		return agentNode{}, a.refuse(errNotPodBound, "the token names no pod; project a bound token into the agent pod")
	}
	a.log = a.log.With(telemetry.PodName, podName)
	pod, err := a.agentPod(ctx, ns, sa, podName, podUID)
	if err != nil {
		return agentNode{}, err
	}
	a.log = a.log.With(telemetry.NodeName, pod.Spec.NodeName)
	node, err := a.agentNode(ctx, pod.Spec.NodeName, user)
	if err != nil {
		return agentNode{}, err
	}
	return agentNode{ns: ns, sa: sa, pod: pod, node: node}, nil
}

// extra returns the single value of a user's extra key, or "".
func extra(user authv1.UserInfo, key string) string {
	if v := user.Extra[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// review asks the API server whether token is valid for the audience.
func (a *attestation) review(ctx context.Context, token string) (authv1.UserInfo, error) {
	req := &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: token, Audiences: []string{a.c.audience}}}
	req.APIVersion, req.Kind = authv1.SchemeGroupVersion.String(), "TokenReview"
	var res authv1.TokenReview
	err := a.c.client.Post(ctx, "/apis/authentication.k8s.io/v1/tokenreviews", req,
		authv1.SchemeGroupVersion.WithKind("TokenReview"), &res)
	if err != nil {
		return authv1.UserInfo{}, a.internal("token review", err)
	}
	st := res.Status
	if !st.Authenticated {
		return authv1.UserInfo{}, a.refuse(errNotAuthentic, "token review: %s", st.Error)
	}
	// An API server that ignores the requested audiences would return none;
	// only an audience it confirms counts.
	if !slices.Contains(st.Audiences, a.c.audience) {
		return authv1.UserInfo{}, a.refuse(errAudience, "token review confirmed audiences %q, want %q", st.Audiences, a.c.audience)
	}
	return st.User, nil
}

func (a *attestation) agentPod(ctx context.Context, ns, sa, name, uid string) (*corev1.Pod, error) {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 || len(validation.IsDNS1123Label(ns)) > 0 {
		return nil, a.refuse(errPodMismatch, "pod %s/%s: not a valid pod name", ns, name)
	}
	var pod corev1.Pod
	path := "/api/v1/namespaces/" + url.PathEscape(ns) + "/pods/" + url.PathEscape(name)
	if err := a.c.client.Get(ctx, path, corev1.SchemeGroupVersion.WithKind("Pod"), &pod); err != nil {
		if kubeclient.IsNotFound(err) {
			return nil, a.refuse(errPodGone, "pod %s/%s: %v", ns, name, err)
		}
		return nil, a.internal("get agent pod", err)
	}
	switch {
	case string(pod.UID) != uid || pod.Namespace != ns || pod.Name != name:
		return nil, a.refuse(errPodMismatch, "pod %s/%s has uid %s, the token names %s", ns, name, pod.UID, uid)
	case pod.Spec.ServiceAccountName != sa:
		return nil, a.refuse(errPodMismatch, "pod runs as service account %q, the token is for %q", pod.Spec.ServiceAccountName, sa)
	case pod.Spec.NodeName == "" || pod.Status.Phase != corev1.PodRunning:
		return nil, a.refuse(errPodNotRunning, "pod phase %q on node %q", pod.Status.Phase, pod.Spec.NodeName)
	case len(validation.IsDNS1123Subdomain(pod.Spec.NodeName)) > 0:
		return nil, a.refuse(errPodNotRunning, "pod's node name %q is not a valid name", pod.Spec.NodeName)
	}
	return &pod, nil
}

// agentNode reads the pod's node and checks it against the node the API
// server bound the token to, when it did (Kubernetes 1.30 and later).
func (a *attestation) agentNode(ctx context.Context, name string, user authv1.UserInfo) (*corev1.Node, error) {
	if n := extra(user, extraNodeName); n != "" && n != name {
		return nil, a.refuse(errNodeMismatch, "the token was issued on node %q, the pod runs on %q", n, name)
	}
	var node corev1.Node
	if err := a.c.client.Get(ctx, "/api/v1/nodes/"+url.PathEscape(name), corev1.SchemeGroupVersion.WithKind("Node"), &node); err != nil {
		if kubeclient.IsNotFound(err) {
			return nil, a.refuse(errNodeGone, "node %s: %v", name, err)
		}
		return nil, a.internal("get agent node", err)
	}
	if node.Name != name {
		return nil, a.refuse(errNodeMismatch, "asked for node %q, got %q", name, node.Name)
	}
	if u := extra(user, extraNodeUID); u != "" && u != string(node.UID) {
		return nil, a.refuse(errNodeMismatch, "the token names node uid %s, node %s has %s", u, name, node.UID)
	}
	return &node, nil
}
