package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nhid/nhid/attestors/container/containerdtest"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
)

// startContainerAgent starts an agent whose config turns on the container
// and sigstore attestors; its socket is alone in a directory that
// containers mount (the data dir, with its keys, is not shared).
func startContainerAgent(t *testing.T, s *server, configYAML string) (*agent, string) {
	t.Helper()
	token, agentID := s.joinToken(t)
	dir := shortTempDir(t)
	sockDir := filepath.Join(dir, "sock")
	if err := os.Mkdir(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &agent{dir: dir, socket: filepath.Join(sockDir, "agent.sock"), healthPort: freePort(t)}
	a.proc = startProc(t, "nhid-agent", filepath.Join(dir, "agent.log"), nil, "nhid-agent", "run",
		"--config", cfg,
		"--data-dir", filepath.Join(dir, "data"),
		"--server", s.addr(),
		"--trust-domain", trustDomain,
		"--socket", a.socket,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", a.healthPort),
		"--log-level", "debug",
		"--join-token", token, "--trust-bundle", s.bundlePEM(t))
	a.waitReady(t)
	return a, agentID
}

// containerResults reads the probe results a container's `probe watch`
// has printed so far.
func containerResults(c *containerdtest.Container) []probeResult {
	var out []probeResult
	for _, line := range strings.Split(c.Log(), "\n") {
		var r probeResult
		if json.Unmarshal([]byte(line), &r) == nil && r.SPIFFEIDs != nil {
			out = append(out, r)
		}
	}
	return out
}

// waitServed waits until the container's probe has been given exactly ids.
func waitServed(t *testing.T, c *containerdtest.Container, ids ...string) {
	t.Helper()
	want := strings.Join(ids, ",")
	eventually(t, 3*waitTimeout, "the container is served "+want, func() error {
		rs := containerResults(c)
		if len(rs) == 0 {
			return fmt.Errorf("no identity yet; container output:\n%s", c.Log())
		}
		if got := strings.Join(rs[len(rs)-1].SPIFFEIDs, ","); got != want {
			return fmt.Errorf("served %s", got)
		}
		return nil
	})
}

func TestAgent_ContainerIdentityByImageDigestAndSignature(t *testing.T) {
	d := containerdtest.Start(t)
	reg := sigstoretest.StartRegistry(t)
	key := sigstoretest.NewKey(t)
	probe := containerdtest.BuildStatic(t, "./test/e2e/probe")
	signed := sigstoretest.Push(t, reg.Host+"/agents/probe:signed", containerdtest.Image(t, probe, "/bin/probe", "signed"))
	sigstoretest.Sign(t, signed, key)
	unsigned := sigstoretest.Push(t, reg.Host+"/agents/probe:unsigned", containerdtest.Image(t, probe, "/bin/probe", "unsigned"))
	keyFile := filepath.Join(shortTempDir(t), "release.pub")
	if err := os.WriteFile(keyFile, key.PEM, 0o600); err != nil {
		t.Fatal(err)
	}

	s := startServer(t)
	a, agentID := startContainerAgent(t, s, fmt.Sprintf(`version: 1
agent:
  workload_attestors:
    container:
      containerd_socket: %s
      namespace: %s
    sigstore:
      public_keys:
        - {name: release, file: %s}
`, d.Socket, containerdtest.Namespace, keyFile))

	signedID := "spiffe://" + trustDomain + "/workload/signed-image"
	unsignedNeedsSig := "spiffe://" + trustDomain + "/workload/unsigned-needs-signature"
	unsignedByDigest := "spiffe://" + trustDomain + "/workload/unsigned-by-digest"
	// The entry the unsigned image must not get is made first: by the time
	// the later one reaches the agent, so has it.
	s.mustCtl(t, "entry", "create", "--spiffe-id", unsignedNeedsSig, "--parent-id", agentID,
		"--selector", "container:image_digest:"+unsigned.DigestStr(), "--selector", "sigstore:signed_by:release")
	s.mustCtl(t, "entry", "create", "--spiffe-id", signedID, "--parent-id", agentID,
		"--selector", "container:image_digest:"+signed.DigestStr(), "--selector", "sigstore:signed_by:release",
		"--purpose", "e2e signed container", "--owner", "qa@example.org")
	s.mustCtl(t, "entry", "create", "--spiffe-id", unsignedByDigest, "--parent-id", agentID,
		"--selector", "container:image_digest:"+unsigned.DigestStr())

	run := func(ref, id string) *containerdtest.Container {
		return d.Run(t, d.Pull(t, ref), id, containerdtest.RunOptions{
			Args:   []string{"/bin/probe", "watch"},
			Env:    []string{"SPIFFE_ENDPOINT_SOCKET=unix:///run/nhid/agent.sock"},
			Mounts: map[string]string{"/run/nhid": filepath.Dir(a.socket)},
		})
	}
	signedC := run(reg.Host+"/agents/probe:signed", strings.Repeat("a1", 32))
	unsignedC := run(reg.Host+"/agents/probe:unsigned", strings.Repeat("b2", 32))

	waitServed(t, signedC, signedID)
	waitServed(t, unsignedC, unsignedByDigest)
	if !strings.Contains(a.log(), "image has no valid signature") {
		t.Errorf("the agent did not log the unsigned image:\n%s", a.log())
	}
}
