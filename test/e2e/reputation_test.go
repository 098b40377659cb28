package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/notify"
)

// reputationPolicy denies payments and allows deploys: denied payment
// requests are the "repeated denials" that push a score down.
const reputationPolicy = `version: 1
rules:
  - name: no-payments
    when: request.scopes.exists(s, s.startsWith("payments:"))
    effect: deny
    reason: "payments are not allowed here"
  - name: deploys
    when: request.scopes.exists(s, s.startsWith("deploy:"))
    effect: allow
    scopes: request.scopes.filter(s, s.startsWith("deploy:"))
    max_ttl: 10m
`

// webhookSecret is the HMAC key the server signs with and the test's
// receiver checks.
const webhookSecret = "e2e-webhook-secret-0123456789abcdef0123456789"

// hookReceiver is the owner's webhook endpoint: it checks every
// delivery's signature and keeps the bodies that verify.
type hookReceiver struct {
	t   testing.TB
	srv *httptest.Server
	mu  sync.Mutex
	got []notify.Body
	bad []string
}

func startHookReceiver(t testing.TB) *hookReceiver {
	r := &hookReceiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		err = notify.Verify([]byte(webhookSecret), req.Header.Get(notify.HeaderTimestamp), req.Header.Get(notify.HeaderSignature), body, time.Now(), 0)
		var b notify.Body
		if err == nil {
			err = json.Unmarshal(body, &b)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil || b.ID != req.Header.Get(notify.HeaderDelivery) {
			r.bad = append(r.bad, fmt.Sprintf("%v: %s", err, body))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		r.got = append(r.got, b)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// waitFor waits for a verified delivery of type typ and returns it.
func (r *hookReceiver) waitFor(typ string) notify.Body {
	r.t.Helper()
	var found notify.Body
	eventually(r.t, 2*waitTimeout, "a "+typ+" webhook", func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.bad) > 0 {
			r.t.Fatalf("deliveries that do not verify: %v", r.bad)
		}
		for _, b := range r.got {
			if b.Type == typ {
				found = b
				return nil
			}
		}
		return fmt.Errorf("deliveries so far: %d", len(r.got))
	})
	return found
}

func (r *hookReceiver) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, b := range r.got {
		out = append(out, b.Type)
	}
	return out
}

// startReputationCluster is a grant cluster whose server denies payments,
// takes 100 points per denial (alert below 300 after three, restrict below
// 200 after four) and notifies the owner at hook.
func startReputationCluster(t *testing.T, hook *hookReceiver) *grantCluster {
	t.Helper()
	dir := shortTempDir(t)
	policyPath, secretPath, configPath := filepath.Join(dir, "policy.yaml"), filepath.Join(dir, "webhook.secret"), filepath.Join(dir, "server.yaml")
	writeTestFile(t, policyPath, reputationPolicy)
	writeTestFile(t, secretPath, webhookSecret+"\n")
	writeTestFile(t, configPath, fmt.Sprintf(`version: 1
server:
  policy: {path: %s}
  reputation:
    weights: {grant_denied: -100}
    alert_below: 300
    restrict_below: 200
  notify:
    webhook: {url: "%s/hooks/nhid", secret_file: %s, timeout: 5s}
`, policyPath, hook.srv.URL, secretPath))
	s := &server{dir: dir, adminSock: filepath.Join(dir, "admin.sock"), port: freePort(t), healthPort: freePort(t)}
	s.proc = startProc(t, "nhid-server", filepath.Join(dir, "server.log"), nil, "nhid-server", "run",
		"--config", configPath,
		"--data-dir", filepath.Join(dir, "data"),
		"--trust-domain", trustDomain,
		"--bind", s.addr(),
		"--admin-socket", s.adminSock,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", s.healthPort),
		"--relying-party-address", "127.0.0.1:0",
		"--log-level", "debug")
	eventually(t, waitTimeout, "nhid-server ready", func() error {
		if s.exited() {
			return fmt.Errorf("nhid-server exited:\n%s", s.log())
		}
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", s.healthPort))
	})
	c := &grantCluster{s: s}
	c.a, c.agentID = startAgent(t, s)
	c.taskID = "spiffe://" + trustDomain + "/agent/deployer"
	s.mustCtl(t, "entry", "create", "--spiffe-id", c.taskID, "--parent-id", c.agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+binSHA256(t, "agent-task"),
		"--purpose", taskPurpose, "--owner", taskOwner,
		"--scope", "deploy:staging", "--scope", "logs:read", "--scope", "payments:send")
	return c
}

// reputationShow is a score as `nhidctl reputation show -o json` prints it.
type reputationShow struct {
	Reputation struct {
		SpiffeID   string  `json:"spiffe_id"`
		Score      float64 `json:"score"`
		Owner      string  `json:"owner"`
		Alerted    bool    `json:"alerted"`
		Restricted bool    `json:"restricted"`
		Events     []struct {
			Kind     string `json:"kind"`
			Reason   string `json:"reason"`
			Reporter string `json:"reporter"`
			GrantID  string `json:"grant_id"`
		} `json:"events"`
	} `json:"reputation"`
}

func TestReputation_RepeatedDenialsRestrictUntilAReset(t *testing.T) {
	t.Parallel()
	hook := startHookReceiver(t)
	c := startReputationCluster(t, hook)

	// A low-risk request is allowed at the baseline; its grant is kept
	// and outstanding when the restriction comes.
	kept := c.runTask(t, deployArgs("--keep")...).find(t, "status")
	if kept.State != "GRANTED" {
		t.Fatalf("deploy at the baseline: %+v, want GRANTED", kept)
	}
	pay := []string{"--scope", "payments:send", "--resource", "invoices/2026-07", "--action", "pay", "--reason", "pay an invoice", "--ttl", "1m"}
	var denied []string
	for i := range 4 {
		run := c.runTask(t, pay...)
		st := run.find(t, "status")
		if st.State != "DENIED" || st.Rule != "no-payments" || run.exit != 3 {
			t.Fatalf("payment %d: %+v (exit %d), want DENIED by no-payments", i+1, st, run.exit)
		}
		denied = append(denied, st.GrantID)
	}

	// The owner's webhook hears of both crossings, signed.
	alert := hook.waitFor(notify.TypeReputationAlert)
	restricted := hook.waitFor(notify.TypeReputationRestricted)
	for _, b := range []notify.Body{alert, restricted} {
		if b.Owner != taskOwner || b.Subject != c.taskID {
			t.Errorf("%s is for %s about %s, want %s about %s", b.Type, b.Owner, b.Subject, taskOwner, c.taskID)
		}
	}
	// 500 − 3×100 is below 300; − 4×100 below 200.
	as, _ := alert.Data["score"].(float64)
	rs, _ := restricted.Data["score"].(float64)
	if as >= 300 || as < 200 || alert.Data["grant_id"] != denied[2] || rs >= 200 || restricted.Data["grant_id"] != denied[3] {
		t.Errorf("alert data %v, restricted data %v; want the third denial below 300 and the fourth below 200", alert.Data, restricted.Data)
	}
	var rep reputationShow
	c.s.ctlJSON(t, &rep, "reputation", "show", c.taskID)
	if r := rep.Reputation; !r.Restricted || r.Score >= 200 || r.Events[0].GrantID != denied[3] || r.Events[0].Reason != "payments are not allowed here" {
		t.Fatalf("reputation show: %+v", r)
	}
	if !strings.Contains(c.s.log(), "reputation below restrict threshold") {
		t.Error("the server logged no restriction")
	}
	if restricted.Data["revoked_grants"] != 1.0 {
		t.Errorf("restricted notification says %v grants were revoked, want 1", restricted.Data["revoked_grants"])
	}
	if got := grantStatusOf(t, c.s, kept.GrantID); got != "GRANT_STATUS_REVOKED" {
		t.Errorf("the outstanding grant is %s after the restriction, want revoked", got)
	}

	// The next low-risk request, allowed by policy, now waits for a person.
	events, _ := c.startTask(t, deployArgs()...)
	if st := nextEvent(t, events, "status"); st.State != "PENDING_APPROVAL" {
		t.Fatalf("deploy while restricted: %+v, want PENDING_APPROVAL", st)
	}

	// A reset restores it.
	out := c.s.mustCtl(t, "reputation", "reset", c.taskID, "--reason", "payments were denied by a policy mistake")
	if !strings.Contains(out, "to 500") {
		t.Errorf("reputation reset printed %q", out)
	}
	rep = reputationShow{} // protojson leaves false and empty fields out
	c.s.ctlJSON(t, &rep, "reputation", "show", c.taskID)
	if r := rep.Reputation; r.Restricted || r.Events[0].Kind != "reset" || !strings.HasPrefix(r.Events[0].Reporter, "unix:") {
		t.Fatalf("after reset: %+v", r)
	}
	if st := c.runTask(t, deployArgs()...).find(t, "status"); st.State != "GRANTED" {
		t.Fatalf("deploy after the reset: %+v, want GRANTED", st)
	}
	if got := hook.types(); slices.Contains(got, "") {
		t.Errorf("a delivery without a type: %v", got)
	}
}
