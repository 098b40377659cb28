package kubetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/util/json"
)

// maxRequestBody bounds a request body, as the API server does.
const maxRequestBody = 3 << 20

func (c *Cluster) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", c.handleTokenReview)
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}", c.handleGetPod)
	mux.HandleFunc("GET /api/v1/nodes/{name}", c.handleGetNode)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := c.authenticate(w, r); ok {
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
		}
	})
	return mux
}

// authenticate checks the bearer token; on failure it answers 401.
func (c *Cluster) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok {
		if user, _, err := c.review(token, nil); err == nil {
			return user.Username, true
		}
	}
	writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
	return "", false
}

// admit authenticates and authorizes a call; on failure it has answered.
func (c *Cluster) admit(w http.ResponseWriter, r *http.Request, attr Request) bool {
	user, ok := c.authenticate(w, r)
	if !ok {
		return false
	}
	attr.User = user
	if !c.authorize(attr) {
		res := attr.Resource
		if attr.Subresource != "" {
			res += "/" + attr.Subresource
		}
		writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, fmt.Sprintf(
			"%s %q is forbidden: User %q cannot %s resource %q in API group %q",
			attr.Resource, attr.Name, user, attr.Verb, res, attr.APIGroup))
		return false
	}
	return true
}

func (c *Cluster) handleTokenReview(w http.ResponseWriter, r *http.Request) {
	if !c.admit(w, r, Request{Verb: "create", APIGroup: "authentication.k8s.io", Resource: "tokenreviews"}) {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	var tr authv1.TokenReview
	if err := kjson.Unmarshal(body, &tr); err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "decode TokenReview: "+err.Error())
		return
	}
	if tr.Kind != "TokenReview" || tr.APIVersion != authv1.SchemeGroupVersion.String() {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest,
			fmt.Sprintf("body is %s %s, want authentication.k8s.io/v1 TokenReview", tr.APIVersion, tr.Kind))
		return
	}
	if tr.Spec.Token == "" {
		writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "spec.token: Required value")
		return
	}
	user, audiences, err := c.review(tr.Spec.Token, tr.Spec.Audiences)
	if c.isAudienceUnaware() {
		user, _, err = c.reviewAnyAudience(tr.Spec.Token)
		audiences = nil
	}
	if err != nil {
		tr.Status = authv1.TokenReviewStatus{Error: "[" + err.Error() + "]"}
	} else {
		tr.Status = authv1.TokenReviewStatus{Authenticated: true, User: user, Audiences: audiences}
	}
	writeObject(w, http.StatusCreated, &tr)
}

func (c *Cluster) handleGetPod(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if !c.admit(w, r, Request{Verb: "get", Resource: "pods", Namespace: ns, Name: name}) {
		return
	}
	p, ok := c.pod(ns, name)
	if !ok {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("pods %q not found", name))
		return
	}
	p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
	writeObject(w, http.StatusOK, p)
}

func (c *Cluster) handleGetNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !c.admit(w, r, Request{Verb: "get", Resource: "nodes", Name: name}) {
		return
	}
	n, ok := c.node(name)
	if !ok {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("nodes %q not found", name))
		return
	}
	n.TypeMeta = metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}
	writeObject(w, http.StatusOK, n)
}

func writeObject(w http.ResponseWriter, code int, obj runtime.Object) {
	data, err := json.Marshal(obj)
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(data)
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	st := &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code),
	}
	data, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(data)
}

// podList is the kubelet's /pods answer.
func podList(pods []corev1.Pod) *corev1.PodList {
	return &corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, Items: pods}
}
