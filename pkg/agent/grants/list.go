package grants

import (
	"context"
	"unicode"

	"google.golang.org/grpc/codes"

	"github.com/nhid/nhid/pkg/telemetry"
	"github.com/nhid/nhid/pkg/workloadapi"
	agentv1 "github.com/nhid/nhid/proto/nhid/agent/v1"
	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Bounds of identifiers in requests.
const (
	// maxGrantIDLen bounds a grant id; the server's are far shorter.
	maxGrantIDLen = 128
	// maxSPIFFEIDLen is the SPIFFE ID length every implementation supports.
	maxSPIFFEIDLen = 2048
)

// Release ends one of the caller's grants early. The server checks that
// the grant belongs to one of the caller's entries.
func (h *Handler) Release(ctx context.Context, req *grantv1.ReleaseRequest) (_ *grantv1.ReleaseResponse, err error) {
	c := h.begin(ctx, methodRelease)
	defer func() { err = c.end(err) }()
	if err := c.attest(); err != nil {
		return nil, err
	}
	if err := checkGrantID(req.GetGrantId()); err != nil {
		return nil, err
	}
	c.log = c.log.With(telemetry.GrantID, req.GetGrantId())
	_, err = h.server.ReleaseGrant(c.ctx, &agentv1.AgentReleaseGrantRequest{
		EntryIds: entryIDs(c.identities, ""), GrantId: req.GetGrantId(),
	})
	if err != nil {
		return nil, &upstreamError{err: err}
	}
	c.log.Info("grant released")
	return &grantv1.ReleaseResponse{}, nil
}

// List returns the caller's active grants, of all its identities or of
// the one spiffe_id names.
func (h *Handler) List(ctx context.Context, req *grantv1.ListRequest) (_ *grantv1.ListResponse, err error) {
	c := h.begin(ctx, methodList)
	defer func() { err = c.end(err) }()
	if err := c.attest(); err != nil {
		return nil, err
	}
	if n := len(req.GetSpiffeId()); n > maxSPIFFEIDLen {
		return nil, invalidArgument("spiffe_id: %d bytes, at most %d allowed", n, maxSPIFFEIDLen)
	}
	ids := entryIDs(c.identities, req.GetSpiffeId())
	if len(ids) == 0 {
		return nil, &workloadapi.StatusError{Code: codes.PermissionDenied, Msg: "spiffe_id: " + req.GetSpiffeId() + NotHeldSuffix}
	}
	resp, err := h.server.ListGrants(c.ctx, &agentv1.AgentListGrantsRequest{EntryIds: ids})
	if err != nil {
		return nil, &upstreamError{err: err}
	}
	now := h.clock.Now().Unix()
	out := &grantv1.ListResponse{Grants: make([]*grantv1.GrantInfo, 0, len(resp.GetGrants()))}
	for _, g := range resp.GetGrants() {
		if g.GetStatus() != typesv1.GrantStatus_GRANT_STATUS_ACTIVE || (g.GetExpiresAt() != 0 && g.GetExpiresAt() <= now) {
			continue
		}
		out.Grants = append(out.Grants, &grantv1.GrantInfo{
			GrantId: g.GetId(), SpiffeId: g.GetSpiffeId(), Scopes: g.GetScopes(),
			Resource: g.GetResource(), Action: g.GetAction(), ExpiresAt: g.GetExpiresAt(),
		})
	}
	return out, nil
}

func checkGrantID(id string) error {
	switch {
	case id == "":
		return invalidArgument("grant_id: required")
	case len(id) > maxGrantIDLen:
		return invalidArgument("grant_id: %d bytes, at most %d allowed", len(id), maxGrantIDLen)
	}
	for _, r := range id {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return invalidArgument("grant_id: contains spaces or control characters")
		}
	}
	return nil
}
