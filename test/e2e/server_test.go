package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
)

// entryList is the shape `nhidctl entry list -o json` prints.
type entryList struct {
	Entries []struct {
		ID        string   `json:"id"`
		SPIFFEID  string   `json:"spiffe_id"`
		ParentID  string   `json:"parent_id"`
		Selectors []string `json:"selectors"`
		Purpose   string   `json:"purpose"`
		Owner     string   `json:"owner"`
	} `json:"entries"`
}

// batchFile writes n entries for parent in the shape `entry list -o json`
// prints, which `entry create -f` reads back.
func batchFile(t *testing.T, dir, parent string, n int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"entries":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"spiffe_id":"spiffe://%s/batch/%d","parent_id":%q,"selectors":["unix:uid:%d"],"purpose":"batch %d","owner":"ops@example.org"}`,
			trustDomain, i, parent, 10000+i, i)
	}
	b.WriteString("]}")
	path := filepath.Join(dir, "entries.json")
	writeFile(t, path, b.String())
	return path
}

func TestServer_JoinTokenAttestSyncPushAndMint(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	token, agentID := s.joinToken(t)
	s.mustCtl(t, "entry", "create", "-f", batchFile(t, s.dir, agentID, 1000))
	var list entryList
	s.ctlJSON(t, &list, "entry", "list", "--parent-id", agentID)
	if len(list.Entries) != 1000 {
		t.Fatalf("entry list shows %d entries, want 1000", len(list.Entries))
	}

	client, err := attest(ctx, t, s, token)
	if err != nil {
		t.Fatalf("attest with a fresh join token: %v", err)
	}
	if got := client.svid.ID.String(); got != agentID {
		t.Fatalf("agent SVID is %s, want the ID token generate announced, %s", got, agentID)
	}

	stream, err := client.api.Sync(ctx, &agentv1.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sync := &syncStream{stream: stream}
	got := map[string]bool{}
	sync.recvUntil(t, "the full snapshot", func(m *agentv1.SyncResponse) bool {
		for _, e := range m.GetUpserts() {
			got[e.GetId()] = true
		}
		return m.GetSnapshotDone()
	})
	if len(got) != 1000 {
		t.Fatalf("snapshot held %d entries, want 1000", len(got))
	}

	target := list.Entries[0]
	s.mustCtl(t, "entry", "update", target.ID, "--purpose", "updated purpose")
	sync.recvUntil(t, "the pushed entry update", func(m *agentv1.SyncResponse) bool {
		for _, e := range m.GetUpserts() {
			if e.GetId() == target.ID && e.GetPurpose() == "updated purpose" {
				return true
			}
		}
		return false
	})

	// The SPIFFE ID comes from the entry, whatever the CSR asks for.
	_, csr := newCSR(t, "spiffe://"+trustDomain+"/someone-else")
	minted, err := client.api.MintX509SVIDs(ctx, &agentv1.MintX509SVIDsRequest{
		Params: []*agentv1.X509SVIDParams{{EntryId: target.ID, Csr: csr}},
	})
	if err != nil {
		t.Fatal(err)
	}
	res := minted.GetResults()[0]
	if res.GetCode() != 0 {
		t.Fatalf("mint: code %d: %s", res.GetCode(), res.GetMessage())
	}
	certs, err := parseChain(res.GetSvidChain())
	if err != nil {
		t.Fatal(err)
	}
	if id := verifySVID(t, certs, loadBundle(t, s)); id.String() != target.SPIFFEID {
		t.Fatalf("minted SVID is for %s, want the entry's %s", id, target.SPIFFEID)
	}

	_, err = attest(ctx, t, s, token)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "used") {
		t.Fatalf("second use of the join token: got %v, want PermissionDenied saying it was used", err)
	}
}

func TestServer_StateSurvivesKill9(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token, agentID := s.joinToken(t)
	out := s.mustCtl(t, "-o", "json", "entry", "create", "--spiffe-id", "spiffe://"+trustDomain+"/db-backup",
		"--parent-id", agentID, "--selector", "unix:uid:1001", "--purpose", "nightly backups", "--owner", "dba@example.org")
	var created struct {
		Entry struct {
			ID string `json:"id"`
		} `json:"entry"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Entry.ID == "" {
		t.Fatalf("entry create -o json printed %q (%v), want {\"entry\":{\"id\":...}}", out, err)
	}
	client, err := attest(ctx, t, s, token)
	if err != nil {
		t.Fatal(err)
	}
	_, csr := newCSR(t, "")
	minted, err := client.api.MintX509SVIDs(ctx, &agentv1.MintX509SVIDsRequest{
		Params: []*agentv1.X509SVIDParams{{EntryId: created.Entry.ID, Csr: csr}},
	})
	if err != nil || minted.GetResults()[0].GetCode() != 0 {
		t.Fatalf("mint before the crash: %v %v", err, minted)
	}
	issued, err := parseChain(minted.GetResults()[0].GetSvidChain())
	if err != nil {
		t.Fatal(err)
	}
	bundleBefore := s.mustCtl(t, "bundle", "show", "--format", "pem")

	s.kill9()
	s = startServerAt(t, s.dir, s.port)

	if after := s.mustCtl(t, "bundle", "show", "--format", "pem"); after != bundleBefore {
		t.Fatalf("the CA changed across a restart:\nbefore:\n%s\nafter:\n%s", bundleBefore, after)
	}
	verifySVID(t, issued, loadBundle(t, s))
	var list entryList
	s.ctlJSON(t, &list, "entry", "list")
	if len(list.Entries) != 1 || list.Entries[0].ID != created.Entry.ID || list.Entries[0].Purpose != "nightly backups" {
		t.Fatalf("entries after restart: %+v", list.Entries)
	}
	var nodes struct {
		Nodes []struct {
			SPIFFEID string `json:"spiffe_id"`
		} `json:"nodes"`
	}
	s.ctlJSON(t, &nodes, "node", "list")
	if len(nodes.Nodes) != 1 || nodes.Nodes[0].SPIFFEID != agentID {
		t.Fatalf("nodes after restart: %+v, want %s", nodes.Nodes, agentID)
	}
	// The node's SVID from before the crash still authenticates it.
	if _, err := client.api.MintX509SVIDs(ctx, &agentv1.MintX509SVIDsRequest{
		Params: []*agentv1.X509SVIDParams{{EntryId: created.Entry.ID, Csr: csr}},
	}); err != nil {
		t.Fatalf("mint with the pre-crash agent SVID: %v", err)
	}
}

func TestAdmin_BadInputIsRejectedAndChangesNothing(t *testing.T) {
	s := startServer(t)
	parent := "spiffe://" + trustDomain + "/nhid/agent/join_token/abc"
	s.mustCtl(t, "entry", "create", "--spiffe-id", "spiffe://"+trustDomain+"/ok", "--parent-id", parent, "--selector", "unix:uid:1")
	before := s.mustCtl(t, "-o", "json", "entry", "list")
	tests := []struct {
		name  string
		args  []string
		field string
	}{
		{"invalid SPIFFE ID", []string{"--spiffe-id", "spiffe://Bad Domain/x", "--parent-id", parent, "--selector", "unix:uid:1"}, "spiffe_id"},
		{"other trust domain", []string{"--spiffe-id", "spiffe://other.org/x", "--parent-id", parent, "--selector", "unix:uid:1"}, "spiffe_id"},
		{"selector without colon", []string{"--spiffe-id", "spiffe://" + trustDomain + "/x", "--parent-id", parent, "--selector", "uid1000"}, "selectors"},
		{"TTL out of range", []string{"--spiffe-id", "spiffe://" + trustDomain + "/x", "--parent-id", parent, "--selector", "unix:uid:1", "--x509-ttl", "1s"}, "x509_ttl"},
		{"reserved ID", []string{"--spiffe-id", "spiffe://" + trustDomain + "/nhid/agent/x", "--parent-id", parent, "--selector", "unix:uid:1"}, "spiffe_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.ctl(append([]string{"entry", "create"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("entry create %v: got %v, want an error naming %s", tt.args, err, tt.field)
			}
		})
	}
	if after := s.mustCtl(t, "-o", "json", "entry", "list"); after != before {
		t.Fatalf("rejected requests changed the store:\nbefore %s\nafter  %s", before, after)
	}
}
