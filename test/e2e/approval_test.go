package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// paymentArgs are agent-task flags for a payment, which needs two people.
func paymentArgs() []string {
	return []string{"--scope", "payments:send", "--resource", "invoices/2026-07", "--action", "pay",
		"--reason", "pay supplier invoice", "--ttl", "2m"}
}

// waitsForApproval reads the task's first status: PENDING_APPROVAL, with
// the approval deadline as its expiry.
func waitsForApproval(t *testing.T, tk *task) taskEvent {
	t.Helper()
	st := tk.next(t, "status", 2*waitTimeout)
	if st.State != "PENDING_APPROVAL" || st.GrantID == "" || st.ExpiresAt <= time.Now().Unix() {
		t.Fatalf("first status %+v, want PENDING_APPROVAL with a grant id and a future deadline", st)
	}
	return st
}

func TestApproval_ApproveUnblocksTheTaskAndItsOwnUIDIsRefused(t *testing.T) {
	t.Parallel()
	c := startApprovalCluster(t, "5m")
	tk := c.startTaskProc(t, deployArgs()...)
	st := waitsForApproval(t, tk)
	if st.Reason != "deploys need a person's approval" || st.Rule != "deploys-need-approval" {
		t.Errorf("pending status %+v, want the policy's rule and reason", st)
	}
	listed := c.approvals(t)
	if len(listed) != 1 || listed[0].ID != st.GrantID || listed[0].ApprovalsRequired != 1 || listed[0].SPIFFEID != c.taskID {
		t.Fatalf("approval list: %+v, want the task's grant needing one approval", listed)
	}

	// agent-task runs as root, and its entry selects root's uid: root may
	// not approve it.
	_, err := c.s.ctl("approval", "approve", st.GrantID)
	if err == nil || !strings.Contains(err.Error(), "nobody decides their own request") || !strings.Contains(err.Error(), "unix:uid:0") {
		t.Fatalf("approval by the subject's own uid: %v, want a refusal", err)
	}

	g := c.approveAs(t, approverA, st.GrantID, "ship it")
	if g.Status != "GRANT_STATUS_ACTIVE" || len(g.Approvals) != 1 || !strings.HasSuffix(g.Approvals[0].Approver, fmt.Sprintf("(%d)", approverA)) {
		t.Fatalf("approved grant: %+v", g)
	}
	granted := tk.next(t, "status", 2*waitTimeout)
	if granted.State != "GRANTED" || granted.GrantID != st.GrantID || granted.Scopes[0] != "deploy:staging" {
		t.Fatalf("after the approval: %+v, want GRANTED", granted)
	}
	if tk.next(t, "released", waitTimeout).GrantID != st.GrantID {
		t.Fatal("the task released another grant")
	}
	if exit := tk.wait(t); exit != 0 {
		t.Fatalf("agent-task exited %d after the approval, want 0", exit)
	}
	if got := grantStatusOf(t, c.s, st.GrantID); got != "GRANT_STATUS_RELEASED" {
		t.Fatalf("grant status after the task = %s", got)
	}
}

func TestApproval_DenialFailsTheTaskWithTheApproversReason(t *testing.T) {
	t.Parallel()
	c := startApprovalCluster(t, "5m")
	tk := c.startTaskProc(t, deployArgs()...)
	st := waitsForApproval(t, tk)
	c.mustCtlAs(t, approverA, "approval", "deny", st.GrantID, "--reason", "change freeze until Monday")
	denied := tk.next(t, "status", 2*waitTimeout)
	if denied.State != "DENIED" || denied.Reason != "change freeze until Monday" {
		t.Fatalf("after the denial: %+v, want DENIED with the approver's reason", denied)
	}
	if exit := tk.wait(t); exit != 3 {
		t.Fatalf("agent-task exited %d after the denial, want 3", exit)
	}
}

func TestApproval_UndecidedRequestTimesOut(t *testing.T) {
	t.Parallel()
	c := startApprovalCluster(t, "3s")
	tk := c.startTaskProc(t, deployArgs()...)
	waitsForApproval(t, tk)
	denied := tk.next(t, "status", 2*waitTimeout)
	if denied.State != "DENIED" || denied.Reason != "approval timed out" {
		t.Fatalf("after the timeout: %+v, want DENIED: approval timed out", denied)
	}
	if exit := tk.wait(t); exit != 3 {
		t.Fatalf("agent-task exited %d after the timeout, want 3", exit)
	}
	if n := len(c.approvals(t)); n != 0 {
		t.Fatalf("approval list shows %d timed-out requests", n)
	}
}

func TestApproval_PendingRequestSurvivesAServerRestart(t *testing.T) {
	t.Parallel()
	c := startApprovalCluster(t, "5m")
	tk := c.startTaskProc(t, deployArgs()...)
	st := waitsForApproval(t, tk)

	c.restartServer(t)
	if listed := c.approvals(t); len(listed) != 1 || listed[0].ID != st.GrantID {
		t.Fatalf("approval list after the restart: %+v, want the pending grant", listed)
	}
	// The agent resumes the task's wait on the restarted server.
	eventually(t, decisionTimeout, "the agent resuming the wait", func() error {
		if !strings.Contains(c.a.log(), "resuming") {
			return fmt.Errorf("no resumption in the agent's log")
		}
		return nil
	})
	c.approveAs(t, approverA, st.GrantID, "after the maintenance window")
	granted := tk.next(t, "status", decisionTimeout)
	if granted.State != "GRANTED" || granted.GrantID != st.GrantID {
		t.Fatalf("after the restart and the approval: %+v, want GRANTED", granted)
	}
	if exit := tk.wait(t); exit != 0 {
		t.Fatalf("agent-task exited %d, want 0", exit)
	}
}

func TestApproval_CriticalGrantNeedsTwoDistinctApprovers(t *testing.T) {
	t.Parallel()
	c := startApprovalCluster(t, "5m")
	tk := c.startTaskProc(t, paymentArgs()...)
	st := waitsForApproval(t, tk)
	if listed := c.approvals(t); len(listed) != 1 || listed[0].ApprovalsRequired != 2 || !listed[0].Critical {
		t.Fatalf("approval list: %+v, want one critical grant needing two approvals", listed)
	}
	if g := c.approveAs(t, approverA, st.GrantID, "invoice checked"); g.Status != "GRANT_STATUS_PENDING" || len(g.Approvals) != 1 {
		t.Fatalf("after one approval: %+v, want still PENDING", g)
	}
	if _, err := c.ctlAs(approverA, "approval", "approve", st.GrantID); err == nil || !strings.Contains(err.Error(), "already approved") {
		t.Fatalf("a second approval by the same person: %v, want a refusal", err)
	}
	g := c.approveAs(t, approverB, st.GrantID, "second pair of eyes")
	if g.Status != "GRANT_STATUS_ACTIVE" || len(g.Approvals) != 2 {
		t.Fatalf("after two approvals: %+v, want ACTIVE", g)
	}
	if granted := tk.next(t, "status", 2*waitTimeout); granted.State != "GRANTED" || granted.Scopes[0] != "payments:send" {
		t.Fatalf("task status %+v, want GRANTED payments:send", granted)
	}
	if exit := tk.wait(t); exit != 0 {
		t.Fatalf("agent-task exited %d, want 0", exit)
	}
}

func TestApproval_WaitResumesOnAnotherServerAfterFailover(t *testing.T) {
	t.Parallel()
	servers := startHAApprovalServers(t, 2)
	token, agentID := servers[0].joinToken(t)
	a := startHAAgent(t, servers, token, servers[1].bundlePEM(t))
	on := syncingServer(t, servers, []float64{0, 0})
	other := servers[1-on]
	c := &approvalCluster{grantCluster: &grantCluster{s: other, a: a, agentID: agentID, taskID: "spiffe://" + trustDomain + "/agent/deployer"}}
	other.mustCtl(t, "entry", "create", "--spiffe-id", c.taskID, "--parent-id", agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+binSHA256(t, "agent-task"),
		"--purpose", taskPurpose, "--owner", taskOwner, "--scope", "deploy:staging")
	var tk *task
	var st taskEvent
	// The entry reaches the agent asynchronously: retry until the task
	// holds its identity.
	eventually(t, waitTimeout, "agent-task waiting for approval", func() error {
		tk = c.startTaskProc(t, deployArgs()...)
		select {
		case e, ok := <-tk.events:
			if ok && e.Event == "identity" {
				st = waitsForApproval(t, tk)
				return nil
			}
			return fmt.Errorf("agent-task: %+v", e)
		case <-time.After(waitTimeout):
			return fmt.Errorf("agent-task printed nothing")
		}
	})

	// The server holding the task's stream dies; the agent fails over and
	// resumes the wait on the other, where the approval is given.
	servers[on].kill9()
	c.approveAs(t, approverA, st.GrantID, "approved during the failover")
	granted := tk.next(t, "status", decisionTimeout)
	if granted.State != "GRANTED" || granted.GrantID != st.GrantID {
		t.Fatalf("after the failover and the approval: %+v, want GRANTED", granted)
	}
	if !strings.Contains(a.log(), "resuming") {
		t.Error("the agent's log does not show the wait resumed")
	}
	if exit := tk.wait(t); exit != 0 {
		t.Fatalf("agent-task exited %d, want 0", exit)
	}
}
