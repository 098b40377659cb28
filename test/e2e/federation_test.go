package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// partnerTD is the trust domain example.org federates with.
const partnerTD = "partner.test"

// startAgentIn starts an agent of trust domain td attested to s.
func startAgentIn(t *testing.T, s *server, td string) (*agent, string) {
	t.Helper()
	token, agentID := s.joinToken(t)
	dir := shortTempDir(t)
	a := &agent{dir: dir, socket: filepath.Join(dir, "agent.sock"), healthPort: freePort(t)}
	a.proc = startProc(t, "nhid-agent", filepath.Join(dir, "agent.log"), nil, "nhid-agent", "run",
		"--data-dir", filepath.Join(dir, "data"),
		"--server", s.addr(),
		"--trust-domain", td,
		"--socket", a.socket,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", a.healthPort),
		"--log-level", "debug",
		"--join-token", token, "--trust-bundle", s.bundlePEM(t))
	a.waitReady(t)
	return a, agentID
}

// exportBundle writes s's SPIFFE bundle document to a file, as an
// operator hands it to a partner out of band.
func exportBundle(t *testing.T, s *server, name string) string {
	t.Helper()
	path := filepath.Join(s.dir, name)
	writeTestFile(t, path, s.mustCtl(t, "bundle", "show", "--format", "spiffe"))
	return path
}

// startMTLSServer runs `probe serve` on addr as a workload of a.
func startMTLSServer(t *testing.T, a *agent, probe, addr string) {
	t.Helper()
	cmd := exec.Command(probe, "serve", addr)
	cmd.Env = append(os.Environ(), a.endpointEnv()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"peer":"listening"`) {
				close(listening)
			}
		}
	}()
	select {
	case <-listening:
	case <-time.After(waitTimeout):
		t.Fatal("probe serve did not start listening")
	}
}

func TestFederation_WorkloadsOfTwoTrustDomainsTalkMTLSOnlyWhenTheirEntriesFederate(t *testing.T) {
	t.Parallel()
	// partner.test runs a bundle endpoint (https_spiffe, its own SVID).
	partnerFed := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	partner := startServerAt(t, shortTempDir(t), freePort(t), "--trust-domain", partnerTD, "--federation-address", partnerFed)
	partnerBundle := exportBundle(t, partner, "partner-bundle.json")

	// example.org federates with it: bootstrapped from the exported
	// document, then refreshed from the endpoint.
	dir := shortTempDir(t)
	config := filepath.Join(dir, "server.yaml")
	writeTestFile(t, config, fmt.Sprintf(`version: 1
server:
  federation:
    federates_with:
      - trust_domain: %s
        bundle_endpoint_url: https://%s
        profile: https_spiffe
        endpoint_spiffe_id: spiffe://%s/nhid/server
        bootstrap_bundle: %s
`, partnerTD, partnerFed, partnerTD, partnerBundle))
	home := startServerAt(t, dir, freePort(t), "--config", config)
	eventually(t, waitTimeout, "a refresh from partner.test's bundle endpoint", func() error {
		var out struct {
			Relationships []struct {
				TrustDomain   string `json:"trust_domain"`
				LastRefreshAt string `json:"last_refresh_at"`
				LastError     string `json:"last_error"`
			} `json:"relationships"`
		}
		home.ctlJSON(t, &out, "federation", "list")
		if len(out.Relationships) != 1 || out.Relationships[0].TrustDomain != partnerTD ||
			out.Relationships[0].LastRefreshAt == "" || out.Relationships[0].LastRefreshAt == "0" {
			return fmt.Errorf("relationships: %+v", out.Relationships)
		}
		return nil
	})
	// partner.test trusts example.org by a bundle set by hand.
	partner.mustCtl(t, "bundle", "set", "--trust-domain", trustDomain, "--file", exportBundle(t, home, "home-bundle.json"))

	homeAgent, homeAgentID := startAgentIn(t, home, trustDomain)
	partnerAgent, partnerAgentID := startAgentIn(t, partner, partnerTD)
	probe, sum := copyProbe(t, shortTempDir(t), "probe", "federation")
	caller := "spiffe://" + trustDomain + "/agents/procurement"
	api := "spiffe://" + partnerTD + "/api/orders"
	var callerEntry struct {
		Entry struct {
			ID string `json:"id"`
		} `json:"entry"`
	}
	home.ctlJSON(t, &callerEntry, "entry", "create", "--spiffe-id", caller, "--parent-id", homeAgentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+sum, "--federates-with", partnerTD,
		"--purpose", "orders supplies from partner.test", "--owner", "buyer@example.org")
	partner.mustCtl(t, "entry", "create", "--spiffe-id", api, "--parent-id", partnerAgentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+sum, "--federates-with", trustDomain,
		"--purpose", "takes orders from customers", "--owner", "sales@partner.test")

	// The caller's X.509 context holds both trust domains' bundles.
	eventually(t, waitTimeout, "the caller holding partner.test's bundle", func() error {
		r, err := runProbe(t, homeAgent, probe, "x509")
		if err != nil {
			return err
		}
		if !slices.Equal(r.TrustDomains, []string{trustDomain, partnerTD}) {
			return fmt.Errorf("caller's bundles: %v", r.TrustDomains)
		}
		return nil
	})

	// A real mTLS connection across the trust domains, go-spiffe at both
	// ends: each side verifies the other with the federated bundle.
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	eventually(t, waitTimeout, "the partner's API serving", func() error {
		_, err := runProbe(t, partnerAgent, probe, "x509")
		return err
	})
	startMTLSServer(t, partnerAgent, probe, addr)
	r, err := runProbe(t, homeAgent, probe, "dial", addr, api)
	if err != nil {
		t.Fatalf("mTLS from %s to %s: %v", caller, api, err)
	}
	if r.Peer != api || r.Subject != caller {
		t.Fatalf("mTLS result %+v: want the server %s seeing the client %s", r, api, caller)
	}

	// A JWT-SVID of the caller validates at the partner's agent.
	jwt := fetchEventually(t, homeAgent, probe, "jwt", "orders.partner.test")
	if v, err := runProbe(t, partnerAgent, probe, "validate", "orders.partner.test", jwt.Token); err != nil || v.Subject != caller {
		t.Fatalf("the partner validating the caller's JWT-SVID: %+v, %v", v, err)
	}

	// Without federates_with the caller no longer trusts the partner.
	home.mustCtl(t, "entry", "update", callerEntry.Entry.ID, "--federates-with", "")
	eventually(t, waitTimeout, "the caller dropping partner.test's bundle", func() error {
		r, err := runProbe(t, homeAgent, probe, "x509")
		if err != nil {
			return err
		}
		if !slices.Equal(r.TrustDomains, []string{trustDomain}) {
			return fmt.Errorf("caller's bundles: %v", r.TrustDomains)
		}
		return nil
	})
	if _, err := runProbe(t, homeAgent, probe, "dial", addr, api); err == nil {
		t.Fatal("mTLS to the partner succeeded without federation")
	}
}
