package workloadapi

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nhid/nhid/pkg/svid"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// FetchJWTSVID mints a JWT-SVID for the requested audience for each of the
// caller's identities, or only for the one named by spiffe_id.
func (h *Handler) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (_ *workload.JWTSVIDResponse, err error) {
	c := h.begin(ctx, methodFetchJWTSVID, false)
	defer func() { err = c.end(err) }()

	if err := checkAudience(req.GetAudience()); err != nil {
		return nil, err
	}
	var want spiffeid.ID
	if req.GetSpiffeId() != "" {
		if want, err = spiffeid.FromString(req.GetSpiffeId()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "spiffe_id: %v", err)
		}
		c.wantID = want.String()
	}
	if err := c.attest(); err != nil {
		return nil, err
	}
	ids := jwtIdentities(h.manager.Current(c.sels), want, c.log)
	if len(ids) == 0 {
		return nil, errNoIdentity
	}
	resp := &workload.JWTSVIDResponse{Svids: make([]*workload.JWTSVID, 0, len(ids))}
	for _, id := range ids {
		token, err := h.manager.FetchJWTSVID(ctx, id.Entry, req.GetAudience())
		if err != nil {
			return nil, &StatusError{Code: codes.Unavailable, Msg: "could not issue JWT-SVID",
				Cause: fmt.Errorf("entry %s: %w", id.Entry.GetId(), err)}
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{
			SpiffeId: id.Entry.GetSpiffeId(),
			Svid:     token,
			Hint:     id.Entry.GetHint(),
		})
	}
	h.metrics.svids.WithLabelValues(kindJWT).Add(float64(len(resp.Svids)))
	c.sent()
	return resp, nil
}

// checkAudience applies the audience rules of the Workload API (§6.2.1:
// mandatory) and the bounds the server applies when minting
// (svid.MaxJWTAudiences, svid.MaxJWTAudienceLen). A request past them can
// never succeed, so it is InvalidArgument here, which clients do not
// retry, rather than a failed mint, which would reach the caller as
// Unavailable and be retried for ever.
func checkAudience(aud []string) error {
	switch {
	case len(aud) == 0:
		return status.Error(codes.InvalidArgument, "audience must be specified")
	}
	// The agent mints for the distinct values (a repeated audience means
	// nothing more), so the bound applies to those.
	if n := len(distinct(aud)); n > svid.MaxJWTAudiences {
		return status.Errorf(codes.InvalidArgument, "audience has %d distinct values, at most %d allowed", n, svid.MaxJWTAudiences)
	}
	for i, a := range aud {
		switch {
		case a == "":
			return status.Errorf(codes.InvalidArgument, "audience[%d] is empty", i)
		case len(a) > svid.MaxJWTAudienceLen:
			return status.Errorf(codes.InvalidArgument, "audience[%d] is %d bytes, at most %d allowed", i, len(a), svid.MaxJWTAudienceLen)
		}
	}
	return nil
}

// distinct returns the distinct values of ss.
func distinct(ss []string) map[string]struct{} {
	out := make(map[string]struct{}, len(ss))
	for _, s := range ss {
		out[s] = struct{}{}
	}
	return out
}

// jwtIdentities picks the identities to mint for: all of them, or the one
// whose SPIFFE ID is want, minus any whose hint an earlier one took.
// Deduplicating before minting spares the server tokens nobody receives.
func jwtIdentities(u *Update, want spiffeid.ID, log *slog.Logger) []Identity {
	if u == nil {
		return nil
	}
	var (
		out   []Identity
		hints hintSet
	)
	for _, id := range u.Identities {
		if id.Entry == nil {
			continue
		}
		if !want.IsZero() && id.Entry.GetSpiffeId() != want.String() {
			continue
		}
		if hints.add(id.Entry.GetHint(), id.Entry.GetSpiffeId()) {
			out = append(out, id)
		}
	}
	hints.logDropped(log)
	return out
}

// FetchJWTBundles streams the JWKS of the agent's trust domain and of the
// federated ones, to a caller entitled to at least one identity.
func (h *Handler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) (err error) {
	c := h.begin(stream.Context(), methodFetchJWTBundles, true)
	defer func() { err = c.end(err) }()
	if err := c.attest(); err != nil {
		return err
	}
	return follow(c, jwtBundlesResponse, stream.Send)
}

func jwtBundlesResponse(u *Update) (*workload.JWTBundlesResponse, error) {
	if u == nil || len(u.Identities) == 0 {
		return nil, errNoIdentity
	}
	if u.Bundle == nil {
		return nil, errNoBundle
	}
	bundles, err := indexBundles(u).jwtBundles()
	if err != nil {
		return nil, err
	}
	return &workload.JWTBundlesResponse{Bundles: bundles}, nil
}

// ValidateJWTSVID validates a JWT-SVID for an audience against the bundle of
// its subject's trust domain (Workload API §6.3). A token that fails
// validation is answered with InvalidArgument and the reason, as SPIRE does
// and clients expect; the specification fixes no code for it.
//
// The caller need not hold an identity, but it must be a live local
// process. Unlike the four Fetch RPCs, §6.2.3 says nothing of
// PermissionDenied for a caller entitled to nothing, and SPIRE validates
// for any attested caller: a service that only verifies callers' tokens
// needs no SVID of its own. Such a caller validates against the agent's
// own trust domain bundle only; federated bundles come with the entries
// that federate with them.
//
// The claims are returned as the token carries them, "aud" included (a
// string or an array, as in the payload): §6.2.3 asks for the claims of
// the payload. SPIRE turns a string "aud" into a one-element list.
func (h *Handler) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (_ *workload.ValidateJWTSVIDResponse, err error) {
	c := h.begin(ctx, methodValidateJWTSVID, false)
	defer func() { err = c.end(err) }()

	switch {
	case req.GetAudience() == "":
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	case req.GetSvid() == "":
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	if err := c.attest(); err != nil {
		return nil, err
	}
	u := h.manager.Current(c.sels)
	if u == nil || u.Bundle == nil {
		return nil, errNoBundle
	}
	svid, err := jwtsvid.ParseAndValidate(req.GetSvid(), indexBundles(u).source(), []string{req.GetAudience()})
	if err != nil {
		// go-spiffe's reasons name claims and key ids, never the token.
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, fmt.Errorf("convert claims of a valid JWT-SVID for %s: %w", svid.ID, err)
	}
	c.sent()
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
