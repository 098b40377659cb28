package grant

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nhid/nhid/pkg/grantreq"
	"github.com/nhid/nhid/pkg/store"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// entryPage is how many entries one look-up of the approver rule reads at
// a time.
const entryPage = 500

// checkApprover refuses by when they would decide their own request: when
// a unix:uid or unix:user selector of theirs is among the selectors of
// the grant's entry, or of any entry that gives the subject's SPIFFE ID,
// or of any entry of the grant's owner (an agent the owner delegated to
// would otherwise approve its siblings' requests). An approver known by
// SPIFFE ID is refused when it is the subject, or when any entry giving
// its SPIFFE ID has the grant's owner. docs/approvals.md states the rule.
func (s *Service) checkApprover(ctx context.Context, g *typesv1.Grant, by Principal) error {
	if s.entries == nil {
		return errors.New("approvals need an entry store to check approvers against; none is configured")
	}
	if by.SPIFFEID != "" {
		return s.checkSPIFFEApprover(ctx, g, by)
	}
	sels := approverSelectors(by)
	e, err := s.entries.GetEntry(ctx, g.GetEntryId())
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read entry %s of grant %s: %w", g.GetEntryId(), g.GetId(), err)
	default:
		if sel, ok := selectsAny(e, sels); ok {
			return fmt.Errorf("%s is the subject %s (its entry selects %s): %w", by.Name, g.GetSpiffeId(), sel, ErrSelfApproval)
		}
	}
	for _, sel := range sels {
		req := store.ListEntriesRequest{Selectors: []string{sel}, PageSize: entryPage}
		for {
			entries, next, err := s.entries.ListEntries(ctx, req)
			if err != nil {
				return fmt.Errorf("list entries selecting %s: %w", sel, err)
			}
			for _, e := range entries {
				switch {
				case e.GetSpiffeId() == g.GetSpiffeId():
					return fmt.Errorf("%s is the subject %s (entry %s selects %s): %w", by.Name, g.GetSpiffeId(), e.GetId(), sel, ErrSelfApproval)
				case g.GetOwner() != "" && e.GetOwner() == g.GetOwner():
					return fmt.Errorf("%s runs as %s, an agent of the same owner %s (entry %s selects %s): %w",
						by.Name, e.GetSpiffeId(), g.GetOwner(), e.GetId(), sel, ErrSelfApproval)
				}
			}
			if next == "" {
				break
			}
			req.PageToken = next
		}
	}
	return nil
}

// checkSPIFFEApprover is checkApprover's rule for an approver known by
// its SPIFFE ID: refused when it is the subject, when an entry giving its
// ID has the grant's owner, or when an entry giving its ID hands it to a
// uid or user (unix:uid/unix:user selector) that an entry of the subject
// also selects under the same parent: every process of that uid on that
// node holds both SVIDs, so the requesting workload could approve itself.
func (s *Service) checkSPIFFEApprover(ctx context.Context, g *typesv1.Grant, by Principal) error {
	if by.SPIFFEID == g.GetSpiffeId() {
		return fmt.Errorf("%s is the subject: %w", by.Name, ErrSelfApproval)
	}
	mine, err := s.entriesOf(ctx, by.SPIFFEID)
	if err != nil {
		return err
	}
	subject, err := s.entriesOf(ctx, g.GetSpiffeId())
	if err != nil {
		return err
	}
	for _, e := range mine {
		if g.GetOwner() != "" && e.GetOwner() == g.GetOwner() {
			return fmt.Errorf("%s is an agent of the same owner %s (entry %s): %w", by.Name, g.GetOwner(), e.GetId(), ErrSelfApproval)
		}
		for _, se := range subject {
			if se.GetParentId() != e.GetParentId() {
				continue
			}
			if sel, ok := selectsAny(se, unixSelectors(e)); ok {
				return fmt.Errorf("%s is handed to the subject's processes too (entries %s and %s both select %s under %s): %w",
					by.Name, e.GetId(), se.GetId(), sel, e.GetParentId(), ErrSelfApproval)
			}
		}
	}
	return nil
}

// entriesOf lists every entry giving spiffeID.
func (s *Service) entriesOf(ctx context.Context, spiffeID string) ([]*typesv1.Entry, error) {
	var out []*typesv1.Entry
	req := store.ListEntriesRequest{SpiffeID: spiffeID, PageSize: entryPage}
	for {
		entries, next, err := s.entries.ListEntries(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("list entries of %s: %w", spiffeID, err)
		}
		out = append(out, entries...)
		if next == "" {
			return out, nil
		}
		req.PageToken = next
	}
}

// unixSelectors are e's selectors that name a uid or a user.
func unixSelectors(e *typesv1.Entry) []string {
	var out []string
	for _, sel := range e.GetSelectors() {
		if strings.HasPrefix(sel, "unix:uid:") || strings.HasPrefix(sel, "unix:user:") {
			out = append(out, sel)
		}
	}
	return out
}

// personKeys says who stands behind an approver, so that one person
// cannot count as two approvers of a critical grant: an approver over
// mTLS is linked to the owners of the entries giving its SPIFFE ID and
// to the (parent, uid or user) pairs they select; an approver on the
// admin socket to its uid and user on the server's host. Keys of the two
// doors never meet: docs/approvals.md says to give approvers one door.
func (s *Service) personKeys(ctx context.Context, name string) ([]string, error) {
	if id, ok := strings.CutPrefix(name, "spiffe://"); ok {
		entries, err := s.entriesOf(ctx, "spiffe://"+id)
		if err != nil {
			return nil, err
		}
		var keys []string
		for _, e := range entries {
			if e.GetOwner() != "" {
				keys = append(keys, "owner:"+e.GetOwner())
			}
			for _, sel := range unixSelectors(e) {
				keys = append(keys, e.GetParentId()+"|"+sel)
			}
		}
		return keys, nil
	}
	return []string{name}, nil
}

// sameAs returns the earlier approvers of g who are the same person as
// by (personKeys), by.Name included.
func (s *Service) sameAs(ctx context.Context, g *typesv1.Grant, by Principal) (map[string]bool, error) {
	out := map[string]bool{by.Name: true}
	mine, err := s.personKeys(ctx, by.Name)
	if err != nil {
		return nil, err
	}
	for _, earlier := range approvers(g) {
		if out[earlier] {
			continue
		}
		theirs, err := s.personKeys(ctx, earlier)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(theirs, func(k string) bool { return slices.Contains(mine, k) }) {
			out[earlier] = true
		}
	}
	return out, nil
}

// selectsAny returns the first of sels that e selects.
func selectsAny(e *typesv1.Entry, sels []string) (string, bool) {
	for _, sel := range sels {
		if slices.Contains(e.GetSelectors(), sel) {
			return sel, true
		}
	}
	return "", false
}

// ListPending pages through the grants waiting for approval, oldest
// first, optionally only spiffeID's; those past their approval deadline
// are left out. pageSize 0 means all. The page token is the previous
// page's last grant. Pending grants are few (people decide them), so each
// page reads all of them.
func (s *Service) ListPending(ctx context.Context, spiffeID string, pageSize int, pageToken string) ([]*typesv1.Grant, string, error) {
	after, err := parsePendingToken(pageToken)
	if err != nil {
		return nil, "", err
	}
	var all []*typesv1.Grant
	req := store.ListGrantsRequest{SpiffeID: spiffeID, Status: typesv1.GrantStatus_GRANT_STATUS_PENDING, PageSize: sweepPage}
	now := s.clock.Now()
	for {
		grants, next, err := s.store.ListGrants(ctx, req)
		if err != nil {
			return nil, "", err
		}
		for _, g := range grants {
			if !expired(g, now) && (after == nil || comparePending(g, after) > 0) {
				all = append(all, g)
			}
		}
		if next == "" {
			break
		}
		req.PageToken = next
	}
	slices.SortFunc(all, comparePending)
	if pageSize <= 0 || len(all) <= pageSize {
		return all, "", nil
	}
	last := all[pageSize-1]
	return all[:pageSize], strconv.FormatInt(last.GetCreatedAt(), 10) + "." + last.GetId(), nil
}

// comparePending orders grants oldest first: by created_at, then id.
func comparePending(a, b *typesv1.Grant) int {
	return cmp.Or(cmp.Compare(a.GetCreatedAt(), b.GetCreatedAt()), strings.Compare(a.GetId(), b.GetId()))
}

// parsePendingToken reads a ListPending page token: nil for "".
func parsePendingToken(tok string) (*typesv1.Grant, error) {
	if tok == "" {
		return nil, nil
	}
	created, id, ok := strings.Cut(tok, ".")
	n, err := strconv.ParseInt(created, 10, 64)
	if !ok || err != nil || id == "" {
		return nil, fmt.Errorf("page_token: %q is not a token this server gave: %w", tok, grantreq.ErrInvalidRequest)
	}
	return &typesv1.Grant{CreatedAt: n, Id: id}, nil
}
