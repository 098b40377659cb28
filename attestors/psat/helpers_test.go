package psat

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nhid/nhid/internal/kubetest"
	"github.com/nhid/nhid/pkg/attestor"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	waitTimeout = 10 * time.Second
	clusterName = "prod"
	agentNS     = "nhid"
	agentSA     = "nhid-agent"
	nodeName    = "node-1"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// fixture is a cluster with one node running an agent pod, and a verifier
// that trusts it.
type fixture struct {
	cluster  *kubetest.Cluster
	node     *corev1.Node
	pod      *corev1.Pod
	cfg      ClusterConfig
	v        *Verifier
	logs     *syncBuffer
	tokenDir string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	c := kubetest.NewCluster(t)
	f := &fixture{cluster: c, logs: &syncBuffer{}, tokenDir: t.TempDir()}
	f.node = c.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   nodeName,
		Labels: map[string]string{"kubernetes.io/hostname": nodeName, "topology.kubernetes.io/zone": "zone-a"},
	}})
	f.pod = f.addAgentPod(t, "nhid-agent-x7k2p", agentSA)
	serverToken := filepath.Join(f.tokenDir, "server-token")
	c.WriteToken(t, serverToken, kubetest.TokenRequest{Namespace: "nhid", ServiceAccount: "nhid-server"})
	f.cfg = ClusterConfig{
		APIServerURL:            c.URL(),
		CAFile:                  c.CAFile(),
		TokenFile:               serverToken,
		ServiceAccountAllowList: []string{agentNS + ":" + agentSA},
	}
	f.v = f.newVerifier(t, f.cfg)
	return f
}

func (f *fixture) addAgentPod(t *testing.T, name, sa string) *corev1.Pod {
	t.Helper()
	return f.cluster.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: agentNS, Name: name, Labels: map[string]string{"app": "nhid-agent"}},
		Spec:       corev1.PodSpec{NodeName: nodeName, ServiceAccountName: sa},
	})
}

func (f *fixture) newVerifier(t *testing.T, cfg ClusterConfig) *Verifier {
	t.Helper()
	v, err := NewVerifier(VerifierConfig{
		TrustDomain: testTD,
		Clusters:    map[string]ClusterConfig{clusterName: cfg},
		Log:         slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// agentToken is a token the kubelet would project into the agent pod.
func (f *fixture) agentToken(t *testing.T) kubetest.TokenRequest {
	t.Helper()
	return kubetest.TokenRequest{Namespace: agentNS, ServiceAccount: agentSA, Pod: f.pod, Audiences: []string{DefaultAudience}}
}

// evidence writes the token of r into a fresh file and returns the agent
// half reading it.
func (f *fixture) evidence(t *testing.T, r kubetest.TokenRequest) *Evidence {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	f.cluster.WriteToken(t, path, r)
	ev, err := NewEvidence(EvidenceConfig{Cluster: clusterName, TokenPath: path})
	if err != nil {
		t.Fatalf("NewEvidence: %v", err)
	}
	return ev
}

func (f *fixture) attest(t *testing.T, v *Verifier, ev attestor.NodeEvidence) (attestor.NodeResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return attestortest.Drive(ctx, v, ev)
}

// syncBuffer is a log destination safe for concurrent attestations.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
