package kubetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
)

// Keys of UserInfo.Extra the API server sets for a pod-bound token.
const (
	ExtraPodName      = "authentication.kubernetes.io/pod-name"
	ExtraPodUID       = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName     = "authentication.kubernetes.io/node-name"
	ExtraNodeUID      = "authentication.kubernetes.io/node-uid"
	ExtraCredentialID = "authentication.kubernetes.io/credential-id"
)

// TokenRequest describes a service-account token to mint, as the kubelet
// requests one for a projected volume.
type TokenRequest struct {
	Namespace      string
	ServiceAccount string
	// Pod binds the token to a pod (and to its node, when the cluster knows
	// the node): the token stops authenticating once that pod is gone.
	Pod *corev1.Pod
	// Audiences default to the API server's own, Issuer.
	Audiences []string
	// TTL defaults to an hour.
	TTL time.Duration
	// IssuedAt defaults to now; a past time with a short TTL makes an
	// expired token.
	IssuedAt time.Time
}

type ref struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

type k8sClaims struct {
	Namespace      string `json:"namespace"`
	Pod            *ref   `json:"pod,omitempty"`
	Node           *ref   `json:"node,omitempty"`
	ServiceAccount ref    `json:"serviceaccount"`
}

// saClaims are the claims of a projected service-account token.
type saClaims struct {
	jwt.Claims
	Kubernetes k8sClaims `json:"kubernetes.io"`
}

// Token mints a signed service-account token.
func (c *Cluster) Token(t testing.TB, r TokenRequest) string {
	t.Helper()
	if r.Namespace == "" || r.ServiceAccount == "" {
		t.Fatal("kubetest: TokenRequest needs Namespace and ServiceAccount")
	}
	if len(r.Audiences) == 0 {
		r.Audiences = []string{Issuer}
	}
	if r.TTL == 0 {
		r.TTL = time.Hour
	}
	if r.IssuedAt.IsZero() {
		r.IssuedAt = time.Now()
	}
	claims := saClaims{
		Claims: jwt.Claims{
			Issuer:    Issuer,
			Subject:   "system:serviceaccount:" + r.Namespace + ":" + r.ServiceAccount,
			Audience:  jwt.Audience(r.Audiences),
			IssuedAt:  jwt.NewNumericDate(r.IssuedAt),
			NotBefore: jwt.NewNumericDate(r.IssuedAt),
			Expiry:    jwt.NewNumericDate(r.IssuedAt.Add(r.TTL)),
			ID:        uuid.NewString(),
		},
		Kubernetes: k8sClaims{
			Namespace:      r.Namespace,
			ServiceAccount: ref{Name: r.ServiceAccount, UID: serviceAccountUID(r.Namespace, r.ServiceAccount)},
		},
	}
	if p := r.Pod; p != nil {
		claims.Kubernetes.Pod = &ref{Name: p.Name, UID: string(p.UID)}
		if n, ok := c.node(p.Spec.NodeName); ok {
			claims.Kubernetes.Node = &ref{Name: n.Name, UID: string(n.UID)}
		}
	}
	tok, err := jwt.Signed(c.signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatalf("kubetest: sign token: %v", err)
	}
	return tok
}

// WriteToken mints a token into path the way the kubelet updates a
// projected volume: written aside, then renamed into place.
func (c *Cluster) WriteToken(t testing.TB, path string, r TokenRequest) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(c.Token(t, r)), 0o600); err != nil {
		t.Fatalf("kubetest: write token: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("kubetest: write token: %v", err)
	}
}

// review checks token as the API server's service-account authenticator
// does for the given audiences, returning the user and the audiences the
// token is valid for.
func (c *Cluster) review(token string, audiences []string) (authv1.UserInfo, []string, error) {
	if len(audiences) == 0 {
		audiences = []string{Issuer}
	}
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return authv1.UserInfo{}, nil, errors.New("invalid bearer token")
	}
	var claims saClaims
	if err := parsed.Claims(&c.key.PublicKey, &claims); err != nil {
		return authv1.UserInfo{}, nil, errors.New("invalid bearer token: signature")
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: Issuer, Time: time.Now()}, 0); err != nil {
		return authv1.UserInfo{}, nil, fmt.Errorf("invalid bearer token: %w", err)
	}
	var valid []string
	for _, a := range audiences {
		if slices.Contains(claims.Audience, a) {
			valid = append(valid, a)
		}
	}
	if len(valid) == 0 {
		return authv1.UserInfo{}, nil, errors.New("token audiences are invalid for the target audiences")
	}
	user, err := c.userOf(claims)
	return user, valid, err
}

// reviewAnyAudience checks token for whatever audiences it names.
func (c *Cluster) reviewAnyAudience(token string) (authv1.UserInfo, []string, error) {
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return authv1.UserInfo{}, nil, errors.New("invalid bearer token")
	}
	var claims jwt.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil || len(claims.Audience) == 0 {
		return authv1.UserInfo{}, nil, errors.New("invalid bearer token")
	}
	return c.review(token, claims.Audience)
}

// userOf is the user a valid token authenticates, after the checks the
// API server makes of a bound token's pod.
func (c *Cluster) userOf(claims saClaims) (authv1.UserInfo, error) {
	k := claims.Kubernetes
	ns, sa, ok := strings.Cut(strings.TrimPrefix(claims.Subject, "system:serviceaccount:"), ":")
	if !ok || ns != k.Namespace || sa != k.ServiceAccount.Name {
		return authv1.UserInfo{}, errors.New("invalid bearer token: subject does not match its claims")
	}
	user := authv1.UserInfo{
		Username: claims.Subject,
		UID:      k.ServiceAccount.UID,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		Extra:    map[string]authv1.ExtraValue{ExtraCredentialID: {"JTI=" + claims.ID}},
	}
	if k.Pod != nil {
		p, ok := c.pod(ns, k.Pod.Name)
		if !ok || string(p.UID) != k.Pod.UID {
			return authv1.UserInfo{}, fmt.Errorf("pod %s/%s bound to the token no longer exists", ns, k.Pod.Name)
		}
		user.Extra[ExtraPodName] = authv1.ExtraValue{k.Pod.Name}
		user.Extra[ExtraPodUID] = authv1.ExtraValue{k.Pod.UID}
	}
	if k.Node != nil {
		user.Extra[ExtraNodeName] = authv1.ExtraValue{k.Node.Name}
		user.Extra[ExtraNodeUID] = authv1.ExtraValue{k.Node.UID}
	}
	return user, nil
}
