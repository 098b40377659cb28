package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ctlTLS runs nhidctl against s's admin API over mutual TLS, with the
// X.509-SVID the agent a gives nhidctl.
func ctlTLS(a *agent, adminAddr string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return run(ctx, nil, "nhidctl", append([]string{"--server", adminAddr, "--workload-socket", a.socket}, args...)...)
}

func TestAdminMTLS_OnlyAnAdminEntrysSVIDGetsInAndItNamesTheActor(t *testing.T) {
	t.Parallel()
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := shortTempDir(t)
	config := filepath.Join(dir, "server.yaml")
	writeTestFile(t, config, `version: 1
server:
  admin:
    roles:
      - {name: approvers, spiffe_ids: ["spiffe://`+trustDomain+`/approvers/*"], permissions: [approve]}
`)
	s := startServerAt(t, dir, freePort(t), "--config", config, "--admin-address", adminAddr)
	a, agentID := startAgent(t, s)

	// No entry selects nhidctl yet: the agent refuses it an SVID, and
	// nhidctl says what it needs.
	_, err := ctlTLS(a, adminAddr, "entry", "list")
	if err == nil || !strings.Contains(err.Error(), "needs an X.509-SVID for nhidctl") {
		t.Fatalf("nhidctl --server without an SVID: %v, want the reason it needs one", err)
	}

	// An entry that is not marked admin gets an SVID but not the API.
	opsID := "spiffe://" + trustDomain + "/ops/alice"
	var created struct {
		Entry struct {
			ID string `json:"id"`
		} `json:"entry"`
	}
	s.ctlJSON(t, &created, "entry", "create", "--spiffe-id", opsID, "--parent-id", agentID,
		"--selector", uidSelector(), "--selector", "unix:sha256:"+binSHA256(t, "nhidctl"),
		"--purpose", "operator console", "--owner", "alice@example.org")
	eventually(t, waitTimeout, "a refusal by the admin API, not by the agent", func() error {
		_, err := ctlTLS(a, adminAddr, "entry", "list")
		if err == nil || !strings.Contains(err.Error(), opsID+" is not an admin identity") {
			return fmt.Errorf("nhidctl --server with a non-admin SVID: %v", err)
		}
		return nil
	})

	// Marked admin, the same SVID is let in at once: the flag is read at
	// every call.
	s.mustCtl(t, "entry", "update", created.Entry.ID, "--admin")
	var listed struct {
		Entries []struct {
			SPIFFEID string `json:"spiffe_id"`
			Admin    bool   `json:"admin"`
		} `json:"entries"`
	}
	out, err := ctlTLS(a, adminAddr, "-o", "json", "entry", "list")
	if err != nil {
		t.Fatalf("nhidctl --server with an admin SVID: %v", err)
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Entries) != 1 || !listed.Entries[0].Admin {
		t.Fatalf("entry list over mTLS: %v\n%s", err, out)
	}

	// A change made over mTLS is recorded with the caller's SPIFFE ID.
	workerID := "spiffe://" + trustDomain + "/workload/made-remotely"
	if _, err := ctlTLS(a, adminAddr, "entry", "create", "--spiffe-id", workerID, "--parent-id", agentID,
		"--selector", "unix:uid:4242", "--purpose", "created over mTLS", "--owner", "bob@example.org"); err != nil {
		t.Fatalf("entry create over mTLS: %v", err)
	}
	eventually(t, waitTimeout, "the audit record of the remote change", func() error {
		out, err := s.ctl("audit", "export", "-o", "jsonl")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var r struct {
				Kind   string `json:"kind"`
				Actor  string `json:"actor"`
				Action string `json:"action"`
			}
			if json.Unmarshal([]byte(line), &r) == nil && r.Kind == "record" &&
				r.Action == "admin.entry.create" && r.Actor == opsID {
				return nil
			}
		}
		return fmt.Errorf("no admin.entry.create record by %s in:\n%s", opsID, out)
	})

	// Under a role that may approve (and so read) but not write, the same
	// entry's new SPIFFE ID reads and is refused changes.
	approverID := "spiffe://" + trustDomain + "/approvers/alice"
	s.mustCtl(t, "entry", "update", created.Entry.ID, "--spiffe-id", approverID)
	eventually(t, waitTimeout, "nhidctl holding the approver SVID", func() error {
		_, err := ctlTLS(a, adminAddr, "entry", "create", "--spiffe-id", workerID+"-2", "--parent-id", agentID, "--selector", "unix:uid:4243")
		if err == nil || !strings.Contains(err.Error(), approverID+" has role approvers (approve); /nhid.admin.v1.EntryService/CreateEntry needs write") {
			return fmt.Errorf("entry create as the approver: %v", err)
		}
		return nil
	})
	if _, err := ctlTLS(a, adminAddr, "approval", "list"); err != nil {
		t.Fatalf("approval list as the approver: %v", err)
	}

	// Revoking the flag shuts the door again, on the next call.
	s.mustCtl(t, "entry", "update", created.Entry.ID, "--admin=false")
	if _, err := ctlTLS(a, adminAddr, "entry", "list"); err == nil || !strings.Contains(err.Error(), "is not an admin identity") {
		t.Fatalf("nhidctl --server after the admin flag was cleared: %v, want a refusal", err)
	}

	// Given a second, admin identity, nhidctl presents the first (by entry
	// id) unless told which: the refusal says how, --admin-id picks it.
	consoleID := "spiffe://" + trustDomain + "/ops/console"
	s.mustCtl(t, "entry", "create", "--spiffe-id", consoleID, "--parent-id", agentID, "--admin",
		"--selector", uidSelector(), "--selector", "unix:sha256:"+binSHA256(t, "nhidctl"),
		"--purpose", "shared operator console", "--owner", "ops@example.org")
	eventually(t, waitTimeout, "nhidctl holding both SVIDs", func() error {
		_, err := ctlTLS(a, adminAddr, "entry", "list")
		if err == nil || !strings.Contains(err.Error(), "pick the admin one with --admin-id") || !strings.Contains(err.Error(), consoleID) {
			return fmt.Errorf("entry list with two SVIDs: %v", err)
		}
		return nil
	})
	if _, err := ctlTLS(a, adminAddr, "--admin-id", consoleID, "entry", "list"); err != nil {
		t.Fatalf("entry list --admin-id %s: %v", consoleID, err)
	}

	// A client that expects another server identity refuses to talk.
	_, err = ctlTLS(a, adminAddr, "--server-id", "spiffe://"+trustDomain+"/not/the/server", "entry", "list")
	if err == nil || !strings.Contains(err.Error(), "over mutual TLS") {
		t.Fatalf("nhidctl --server-id of another identity: %v, want a TLS refusal", err)
	}
}
