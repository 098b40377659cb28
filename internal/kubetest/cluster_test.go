package kubetest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// client trusts only the CA in caFile, as a pinned client does.
func client(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func call(t *testing.T, c *http.Client, method, url, token string, body any, out any) int {
	t.Helper()
	var r bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&r).Encode(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, url, &r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("decode %s %s answer: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

func TestTokenReview_ChecksSignatureExpiryAudienceAndBinding(t *testing.T) {
	c := NewCluster(t)
	hc := client(t, c.CAFile())
	node := c.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	pod := c.AddPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "sa"}})
	reviewer := c.Token(t, TokenRequest{Namespace: "kube-system", ServiceAccount: "reviewer"})
	bound := TokenRequest{Namespace: "ns", ServiceAccount: "sa", Pod: pod, Audiences: []string{"aud"}}
	review := func(token string, audiences ...string) authv1.TokenReviewStatus {
		t.Helper()
		req := authv1.TokenReview{
			TypeMeta: metav1.TypeMeta{Kind: "TokenReview", APIVersion: "authentication.k8s.io/v1"},
			Spec:     authv1.TokenReviewSpec{Token: token, Audiences: audiences},
		}
		var res authv1.TokenReview
		if code := call(t, hc, "POST", c.URL()+"/apis/authentication.k8s.io/v1/tokenreviews", reviewer, req, &res); code != http.StatusCreated {
			t.Fatalf("TokenReview answered %d", code)
		}
		if res.Kind != "TokenReview" || res.APIVersion != "authentication.k8s.io/v1" {
			t.Errorf("answer is %s %s", res.APIVersion, res.Kind)
		}
		return res.Status
	}

	st := review(c.Token(t, bound), "aud")
	want := authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"aud"}, User: authv1.UserInfo{
		Username: "system:serviceaccount:ns:sa", UID: serviceAccountUID("ns", "sa"),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"},
		Extra: map[string]authv1.ExtraValue{
			ExtraPodName: {"p"}, ExtraPodUID: {string(pod.UID)}, ExtraNodeName: {"n1"}, ExtraNodeUID: {string(node.UID)},
		},
	}}
	delete(st.User.Extra, ExtraCredentialID)
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("valid token (-want +got):\n%s", diff)
	}

	expired := bound
	expired.IssuedAt, expired.TTL = time.Now().Add(-time.Hour), time.Minute
	other := NewCluster(t)
	refused := map[string]authv1.TokenReviewStatus{
		"wrong audience":      review(c.Token(t, bound), "other"),
		"expired":             review(c.Token(t, expired), "aud"),
		"another cluster's":   review(other.Token(t, TokenRequest{Namespace: "ns", ServiceAccount: "sa", Audiences: []string{"aud"}}), "aud"),
		"not a token":         review("a.b.c", "aud"),
		"pod deleted (below)": {},
	}
	tok := c.Token(t, bound)
	c.DeletePod("ns", "p")
	refused["pod deleted (below)"] = review(tok, "aud")
	for name, st := range refused {
		if st.Authenticated || st.Error == "" {
			t.Errorf("%s token: status %+v, want not authenticated with an error", name, st)
		}
	}
}

func TestAPIServer_AuthenticatesAndAuthorizesEveryCall(t *testing.T) {
	c := NewCluster(t)
	hc := client(t, c.CAFile())
	c.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	tok := c.Token(t, TokenRequest{Namespace: "nhid", ServiceAccount: "server"})
	var st metav1.Status
	if code := call(t, hc, "GET", c.URL()+"/api/v1/nodes/n1", "", nil, &st); code != http.StatusUnauthorized || st.Reason != metav1.StatusReasonUnauthorized {
		t.Errorf("no token: %d %s, want 401 Unauthorized", code, st.Reason)
	}
	var n corev1.Node
	if code := call(t, hc, "GET", c.URL()+"/api/v1/nodes/n1", tok, nil, &n); code != http.StatusOK || n.Kind != "Node" || n.Name != "n1" {
		t.Errorf("get node: %d %s %s", code, n.Kind, n.Name)
	}
	if code := call(t, hc, "GET", c.URL()+"/api/v1/namespaces/x/pods/y", tok, nil, &st); code != http.StatusNotFound || st.Kind != "Status" {
		t.Errorf("missing pod: %d %s, want a 404 Status", code, st.Kind)
	}
	c.EnforceRBAC(map[string][]rbacv1.PolicyRule{"system:serviceaccount:nhid:server": {{
		Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"pods"},
	}}})
	if code := call(t, hc, "GET", c.URL()+"/api/v1/nodes/n1", tok, nil, &st); code != http.StatusForbidden || !strings.Contains(st.Message, "cannot get resource \"nodes\"") {
		t.Errorf("node without RBAC: %d %q, want 403", code, st.Message)
	}
	reqs := c.Requests()
	if last := reqs[len(reqs)-1]; last.Allowed || last.Resource != "nodes" || last.Verb != "get" {
		t.Errorf("last request recorded as %+v", last)
	}
}
