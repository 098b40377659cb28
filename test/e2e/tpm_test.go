package e2e

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhid/nhid/attestors/tpm/tpmtest"
)

// tpmRequoteInterval is how often the e2e server quotes TPM nodes again.
const tpmRequoteInterval = "2s"

// tpmNode is a swtpm with an EK certificate from the test's CA, and the
// golden set its current boot PCRs match.
type tpmNode struct {
	ca      *tpmtest.CA
	tpm     *tpmtest.TPM
	golden  string // a pcr_policies entry of the server config
	agentID string
}

func newTPMNode(t *testing.T) *tpmNode {
	t.Helper()
	tpmtest.Require(t)
	ca := tpmtest.NewCA(t, "nhid e2e EK CA")
	tp := tpmtest.Start(t, ca)
	golden := fmt.Sprintf("      boot-golden:\n        0: [%s]\n        7: [%s]\n",
		hex.EncodeToString(tp.PCR(t, 0)), hex.EncodeToString(tp.PCR(t, 7)))
	return &tpmNode{ca: ca, tpm: tp, golden: golden,
		agentID: "spiffe://" + trustDomain + "/nhid/agent/tpm/" + tp.EKHash(t)}
}

// startTPMServer starts nhid-server trusting the node's EK CA, holding TPM
// nodes to its golden set and quoting them every tpmRequoteInterval; agent
// SVIDs live a minute, so renewals come within the test.
func startTPMServer(t *testing.T, n *tpmNode) *server {
	t.Helper()
	dir := shortTempDir(t)
	cfg := filepath.Join(dir, "server.yaml")
	writeFile(t, cfg, fmt.Sprintf(`version: 1
server:
  svid:
    agent_ttl: 1m
  tpm:
    ek_ca_files: [%s]
    requote_interval: %s
    pcr_policies:
%s`, n.ca.CertFile, tpmRequoteInterval, n.golden))
	return startServerAt(t, dir, freePort(t), "--config", cfg)
}

// startTPMAgent starts nhid-agent attesting with the TPM at swtpmAddr; it
// does not wait for the agent to be ready.
func startTPMAgent(t *testing.T, s *server, swtpmAddr, akType string) *agent {
	t.Helper()
	return startAgentWithConfig(t, s, fmt.Sprintf("version: 1\nagent:\n  node_attestor: tpm\n  tpm:\n    swtpm: %s\n    ak_type: %s\n", swtpmAddr, akType))
}

// tpmNodeShow is what `nhidctl -o json node show` prints of a TPM node.
type tpmNodeShow struct {
	Node struct {
		Selectors    []string `json:"selectors"`
		Status       string   `json:"status"`
		StatusReason string   `json:"status_reason"`
	} `json:"node"`
}

func (s *server) tpmNode(t *testing.T, id string) tpmNodeShow {
	t.Helper()
	var shown tpmNodeShow
	s.ctlJSON(t, &shown, "node", "show", id)
	return shown
}

// servedThroughGoldenAlias registers a workload under a node alias for the
// golden set and checks a probe on the agent gets its identity.
func servedThroughGoldenAlias(t *testing.T, s *server, a *agent) (probe, sum string) {
	t.Helper()
	alias := "spiffe://" + trustDomain + "/nodes/boot-golden"
	s.mustCtl(t, "entry", "create", "--spiffe-id", alias, "--parent-id", "spiffe://"+trustDomain+"/nhid/server",
		"--selector", "tpm:pcr_policy:boot-golden")
	probe, sum = copyProbe(t, a.dir, "probe", "")
	id := "spiffe://" + trustDomain + "/workload/measured"
	s.mustCtl(t, "entry", "create", "--spiffe-id", id, "--parent-id", alias,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+sum, "--purpose", "e2e TPM probe", "--owner", "qa@example.org")
	if r := fetchEventually(t, a, probe, "x509"); len(r.SPIFFEIDs) != 1 || r.SPIFFEIDs[0] != id {
		t.Fatalf("the probe got %v, want [%s]", r.SPIFFEIDs, id)
	}
	return probe, sum
}

func TestTPM_AgentAttestsWithSWTPMAndGoldenSetEntriesAreServed(t *testing.T) {
	t.Parallel()
	for _, ak := range []string{"ec-p256", "rsa-2048"} {
		t.Run(ak, func(t *testing.T) {
			t.Parallel()
			n := newTPMNode(t)
			s := startTPMServer(t, n)
			a := startTPMAgent(t, s, n.tpm.Addr, ak)
			a.waitReady(t)

			shown := s.tpmNode(t, n.agentID)
			if shown.Node.Status != "NODE_STATUS_ACTIVE" {
				t.Errorf("node status %s, want active", shown.Node.Status)
			}
			want := []string{
				"tpm:ek_pubhash:" + n.tpm.EKHash(t),
				"tpm:ek_cert_issuer_cn:nhid e2e EK CA",
				"tpm:pcr:7:" + hex.EncodeToString(n.tpm.PCR(t, 7)),
				"tpm:pcr_policy:boot-golden",
			}
			for _, w := range want {
				if !slices.Contains(shown.Node.Selectors, w) {
					t.Errorf("node selectors %v lack %s", shown.Node.Selectors, w)
				}
			}
			servedThroughGoldenAlias(t, s, a)
		})
	}
}

func TestTPM_PCRExtendedAfterEnrolmentStopsRenewals(t *testing.T) {
	t.Parallel()
	n := newTPMNode(t)
	s := startTPMServer(t, n)
	a := startTPMAgent(t, s, n.tpm.Addr, "ec-p256")
	a.waitReady(t)
	servedThroughGoldenAlias(t, s, a)
	eventually(t, waitTimeout, "a continuous attestation passed", func() error {
		if !strings.Contains(s.log(), "continuous attestation passed") {
			return fmt.Errorf("no requote yet")
		}
		return nil
	})

	n.tpm.ExtendPCR(t, 7, []byte("a boot component nobody approved"))
	eventually(t, waitTimeout, "the node untrusted", func() error {
		shown := s.tpmNode(t, n.agentID)
		if shown.Node.Status != "NODE_STATUS_UNTRUSTED" {
			return fmt.Errorf("node is %s", shown.Node.Status)
		}
		if !strings.Contains(shown.Node.StatusReason, "PCR policy not met") {
			return fmt.Errorf("status_reason %q does not name the policy", shown.Node.StatusReason)
		}
		return nil
	})
	if !hasLogLine(s.log(), "msg=audit", "event=node_untrusted", "node_id="+n.agentID, "attestor=tpm") {
		t.Errorf("the server log has no audit record of the node becoming untrusted")
	}

	// New workload identities are no longer minted for the node...
	other, otherSum := copyProbe(t, a.dir, "other", "\x00another build")
	s.mustCtl(t, "entry", "create", "--spiffe-id", "spiffe://"+trustDomain+"/workload/after-tampering",
		"--parent-id", n.agentID, "--selector", uidSelector(), "--selector", "unix:sha256:"+otherSum)
	eventually(t, waitTimeout, "minting refused", func() error {
		if !strings.Contains(s.log(), "X.509-SVID minting refused") {
			return fmt.Errorf("no refused mint in the server log yet")
		}
		return nil
	})
	if _, err := runProbe(t, a, other, "x509"); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("a workload of the untrusted node: err = %v, want PermissionDenied", err)
	}
	// ...and the agent's own SVID (1 minute) is not renewed at half life.
	eventually(t, 75*time.Second, "the agent SVID renewal refused", func() error {
		if !strings.Contains(s.log(), "agent SVID renewal refused") {
			return fmt.Errorf("no refused renewal in the server log yet")
		}
		return nil
	})
	if a.exited() {
		t.Errorf("the agent exited while its SVID was still valid:\n%s", a.log())
	}
}

func TestTPM_EKCertificateFromUnknownCAIsRefused(t *testing.T) {
	t.Parallel()
	n := newTPMNode(t)
	s := startTPMServer(t, n)
	stranger := tpmtest.Start(t, tpmtest.NewCA(t, "someone else's EK CA"))
	a := startTPMAgent(t, s, stranger.Addr, "ec-p256")
	eventually(t, 30*time.Second, "the agent giving up", func() error {
		if !a.exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if log := a.log(); !strings.Contains(log, "attestation failed: EK not trusted") {
		t.Errorf("the agent's log does not give the reason:\n%s", log)
	}
	if log := s.log(); !strings.Contains(log, "node attestation refused") || !strings.Contains(log, "ek_pubhash="+stranger.EKHash(t)) {
		t.Errorf("the server's log lacks the refusal naming the EK:\n%s", log)
	}
}

// hasLogLine reports whether one line of log holds every part.
func hasLogLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
