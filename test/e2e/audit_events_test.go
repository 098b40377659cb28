package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/audit"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// recordDetails decodes a record's details.
func recordDetails(t *testing.T, r *typesv1.AuditRecord) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal([]byte(r.GetDetails()), &d); err != nil {
		t.Fatalf("record %d details %q: %v", r.GetSeq(), r.GetDetails(), err)
	}
	return d
}

func TestAuditEvents_AttestationMintsAndARefusedWorkloadAreRecorded(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a, agentID := startAgent(t, s)
	id := registerSelf(t, s, a, agentID, "audited")

	// This process asks for an identity it does not hold: the agent
	// refuses and reports it, and the server records it.
	other := "spiffe://" + trustDomain + "/e2e/not-mine"
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := dialWorkload(t, a.socket).FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"rp"}, SpiffeId: other})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("FetchJWTSVID of another's identity: %v, want PermissionDenied", err)
	}
	recs := s.waitForActions(t, audit.ActionNodeAttest, audit.ActionSVIDMint, audit.ActionWorkloadAttestFail)

	var attested, minted, refused bool
	for _, r := range recs {
		switch r.GetAction() {
		case audit.ActionNodeAttest:
			attested = attested || (r.GetActor() == agentID && r.GetOutcome() == audit.OutcomeSuccess)
		case audit.ActionSVIDMint:
			d := recordDetails(t, r)
			minted = minted || (r.GetActor() == agentID && d["kind"] == "x509" && strings.Contains(r.GetDetails(), id))
		case audit.ActionWorkloadAttestFail:
			d := recordDetails(t, r)
			refused = refused || (r.GetActor() == agentID && r.GetTarget() == other && r.GetOutcome() == audit.OutcomeDenied &&
				d["pid"] == float64(os.Getpid()) && d["uid"] == float64(os.Getuid()) && d["method"] == "/SpiffeWorkloadAPI/FetchJWTSVID")
		}
	}
	if !attested || !minted || !refused {
		for _, r := range recs {
			t.Logf("%d %s actor=%s target=%s outcome=%s details=%s", r.GetSeq(), r.GetAction(), r.GetActor(), r.GetTarget(), r.GetOutcome(), r.GetDetails())
		}
		t.Fatalf("attestation recorded %v, the mint of %s %v, the refusal %v; want all", attested, id, minted, refused)
	}
	if out, err := s.auditVerify(); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}
