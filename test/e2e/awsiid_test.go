package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nhid/nhid/attestors/awsiid/awsiidtest"
)

// awsInstance is a fake EC2 instance: an IMDSv2 in this test process
// serving its identity document, signed by a test "AWS" region key.
type awsInstance struct {
	signer  *awsiidtest.Signer
	doc     awsiidtest.Document
	imds    *awsiidtest.IMDS
	agentID string
}

func newAWSInstance(t *testing.T) *awsInstance {
	t.Helper()
	i := &awsInstance{signer: awsiidtest.NewSigner(t), doc: awsiidtest.NewDocument()}
	raw := i.doc.Render()
	i.imds = awsiidtest.StartIMDS(t, raw, i.signer.Sign(raw))
	i.agentID = fmt.Sprintf("spiffe://%s/nhid/agent/aws_iid/%s/%s/%s", trustDomain, i.doc.AccountID, i.doc.Region, i.doc.InstanceID)
	return i
}

// startAWSServer starts nhid-server trusting the instance's region and
// account.
func startAWSServer(t *testing.T, i *awsInstance) *server {
	t.Helper()
	dir := shortTempDir(t)
	certs := filepath.Join(dir, "aws-certs.pem")
	writeFile(t, certs, string(i.signer.PEM))
	cfg := filepath.Join(dir, "server.yaml")
	writeFile(t, cfg, fmt.Sprintf(`version: 1
server:
  aws_iid:
    enabled: true
    certificates_file: %s
    accounts: [%q]
    regions: [%s]
    max_instance_age: 24h
`, certs, i.doc.AccountID, i.doc.Region))
	return startServerAt(t, dir, freePort(t), "--config", cfg)
}

// startAWSAgent starts nhid-agent attesting with the instance's IMDS; it
// does not wait for the agent to be ready.
func startAWSAgent(t *testing.T, s *server, i *awsInstance) *agent {
	t.Helper()
	return startAgentWithConfig(t, s, fmt.Sprintf("version: 1\nagent:\n  node_attestor: aws_iid\n  aws_iid:\n    metadata_endpoint: %s\n    timeout: 5s\n", i.imds.URL()))
}

func TestAWSIID_AgentAttestsOnceAndACopyOfItsDocumentWaitsForEviction(t *testing.T) {
	t.Parallel()
	inst := newAWSInstance(t)
	s := startAWSServer(t, inst)
	first := startAWSAgent(t, s, inst)
	first.waitReady(t)

	var shown nodeShow
	s.ctlJSON(t, &shown, "node", "show", inst.agentID)
	node := shown.Node
	d := inst.doc
	for _, want := range []string{"aws_iid:account:" + d.AccountID, "aws_iid:region:" + d.Region,
		"aws_iid:az:" + d.AvailabilityZone, "aws_iid:instance_id:" + d.InstanceID,
		"aws_iid:image_id:" + d.ImageID, "aws_iid:instance_type:" + d.InstanceType} {
		if !slices.Contains(node.Selectors, want) {
			t.Errorf("node selectors %v lack %s", node.Selectors, want)
		}
	}

	// A node-alias entry for the account's instances, and a workload
	// entry under it: the agent serves it without naming the instance.
	alias := "spiffe://" + trustDomain + "/aws/account-nodes"
	s.mustCtl(t, "entry", "create", "--spiffe-id", alias, "--parent-id", "spiffe://"+trustDomain+"/nhid/server",
		"--selector", "aws_iid:account:"+d.AccountID)
	id := "spiffe://" + trustDomain + "/aws/workload"
	s.mustCtl(t, "entry", "create", "--spiffe-id", id, "--parent-id", alias, "--selector", uidSelector())
	probe, _ := copyProbe(t, first.dir, "probe", "")
	if r := fetchEventually(t, first, probe, "x509"); len(r.SPIFFEIDs) != 1 || r.SPIFFEIDs[0] != id {
		t.Fatalf("workload got %v, want [%s]", r.SPIFFEIDs, id)
	}

	// A second agent presenting a copy of the document is refused while
	// the node exists: the document is replayable.
	copycat := startAWSAgent(t, s, inst)
	eventually(t, waitTimeout, "the second agent gives up", func() error {
		if !copycat.exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if !strings.Contains(copycat.log(), "node already attested with this evidence") {
		t.Errorf("second agent's log lacks the trust-on-first-use refusal:\n%s", copycat.log())
	}
	s.ctlJSON(t, &shown, "node", "show", inst.agentID)
	if shown.Node.Status != "NODE_STATUS_ACTIVE" || shown.Node.SVIDSerial != node.SVIDSerial {
		t.Errorf("after the refused copy the node is %s with serial %s, want it untouched (ACTIVE, %s)",
			shown.Node.Status, shown.Node.SVIDSerial, node.SVIDSerial)
	}
	if first.exited() {
		t.Fatalf("the genuine agent stopped:\n%s", first.log())
	}

	// Once the operator evicts the node (its agent is gone, say, and the
	// instance gets a new one), the document attests again.
	first.stop()
	s.mustCtl(t, "node", "evict", inst.agentID)
	replacement := startAWSAgent(t, s, inst)
	replacement.waitReady(t)
	s.ctlJSON(t, &shown, "node", "show", inst.agentID)
	if shown.Node.Status != "NODE_STATUS_ACTIVE" || shown.Node.SVIDSerial == node.SVIDSerial {
		t.Errorf("after eviction the node is %s with serial %s, want ACTIVE with a new agent SVID", shown.Node.Status, shown.Node.SVIDSerial)
	}
	probe, _ = copyProbe(t, replacement.dir, "probe", "")
	if r := fetchEventually(t, replacement, probe, "x509"); len(r.SPIFFEIDs) != 1 || r.SPIFFEIDs[0] != id {
		t.Fatalf("after re-attestation the workload got %v, want [%s]", r.SPIFFEIDs, id)
	}
}
