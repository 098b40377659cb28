// Package psat is the Kubernetes projected service-account token node
// attestor, "k8s_psat". The agent, running as a DaemonSet pod, presents a
// service-account token the kubelet projected into it for the audience
// nhid-server. The server has the cluster's API server review the token
// (TokenReview), checks the audience and that the service account is
// allowed, and binds the token to a node by reading the pod it was issued
// for and that pod's node. The node gets
//
//	spiffe://<td>/nhid/agent/k8s_psat/<cluster>/<node-uid>
//
// and these selectors (type "k8s_psat"):
//
//	cluster:<name>  agent_ns:<ns>  agent_sa:<sa>  agent_pod_name:<pod>
//	agent_pod_uid:<uid>  agent_node_name:<node>  agent_node_uid:<uid>
//	agent_node_label:<key>:<value>
//
// A projected token is renewed by the kubelet, so a node can present fresh
// evidence at any time: the result allows re-attestation.
package psat

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nhid/nhid/pkg/attestor"
)

// Type is the attestor type and selector type, "k8s_psat".
const Type = "k8s_psat"

// Defaults of the two halves.
const (
	// DefaultAudience is the audience the agent's token is projected for
	// and the server requires.
	DefaultAudience = "nhid-server"
	// DefaultTokenPath is where the agent DaemonSet projects its token.
	DefaultTokenPath = "/var/run/secrets/tokens/nhid-agent"
	// DefaultAPIServerURL, DefaultCAFile and DefaultTokenFile are the
	// in-cluster API server and the server pod's own credentials.
	DefaultAPIServerURL = "https://kubernetes.default.svc"
	DefaultCAFile       = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	DefaultTokenFile    = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// Bounds of the evidence, checked before anything is decoded.
const (
	maxPayload = 48 << 10
	maxToken   = 32 << 10
)

// payload is the evidence the agent sends.
type payload struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
}

var (
	clusterNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$`)
	// jwtRE is the compact serialization of a JWS: three base64url parts.
	jwtRE = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`)
)

// CheckClusterName reports whether name can name a cluster: it becomes a
// segment of agent IDs and a selector value, so it is 1 to 63 letters,
// digits, '.', '_' or '-', starting and ending with a letter or digit.
func CheckClusterName(name string) error {
	if !clusterNameRE.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("cluster name %q: must be 1 to 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// checkToken checks the shape of a token without decoding it: the API
// server decides whether it is valid.
func checkToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("token is empty")
	case len(tok) > maxToken:
		return fmt.Errorf("token is longer than %d bytes", maxToken)
	case !jwtRE.MatchString(tok):
		return errors.New("token is not a compact JWT")
	}
	return nil
}

func encodePayload(p payload) ([]byte, error) {
	return json.Marshal(p)
}

// decodePayload decodes and checks evidence: one JSON object with exactly
// the known fields, a valid cluster name and a token of JWT shape.
func decodePayload(data []byte) (payload, error) {
	var p payload
	if err := attestor.DecodePayload(data, maxPayload, &p); err != nil {
		return payload{}, err
	}
	if err := CheckClusterName(p.Cluster); err != nil {
		return payload{}, err
	}
	if err := checkToken(p.Token); err != nil {
		return payload{}, err
	}
	return p, nil
}

// serviceAccountName splits a token's user name,
// system:serviceaccount:<ns>:<name>.
func serviceAccountName(username string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(username, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	return ns, name, ok && ns != "" && name != "" && !strings.Contains(name, ":")
}
