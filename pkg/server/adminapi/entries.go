package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nhid/nhid/pkg/entry"
	"github.com/nhid/nhid/pkg/selector"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Request bounds.
const (
	// MaxBatch is the most entries BatchCreateEntries takes in one call, so
	// one request cannot hold the store's write lock for long.
	MaxBatch = 1000
	// DefaultPageSize and MaxPageSize bound List* pages.
	DefaultPageSize = 500
	MaxPageSize     = 5000
	// maxPageToken bounds an opaque page token; real ones are far shorter.
	maxPageToken = 4096
)

type entryService struct {
	adminv1.UnimplementedEntryServiceServer
	s *Service
}

// prepareNew validates an entry to be created and puts it in stored form.
// Revision and created_at belong to the server, so what the caller sent is
// replaced (a listing can be fed back as it is).
func (s *Service) prepareNew(e *typesv1.Entry) error {
	if err := entry.Validate(s.td, e, s.limits); err != nil {
		return err
	}
	entry.Normalize(e)
	e.Revision = 0
	e.CreatedAt = s.clock.Now().Unix()
	return nil
}

// Actions of the entry changes, after audit.ActionAdminPrefix.
const (
	actionEntryCreate = "entry.create"
	actionEntryUpdate = "entry.update"
	actionEntryDelete = "entry.delete"
)

// entryChange describes a change to e: the stored entry when the change
// succeeded, else what the request named (possibly nil). federates_with is
// recorded with the selectors because it decides which foreign roots the
// entry's workloads trust.
func entryChange(action string, e *typesv1.Entry) change {
	details := map[string]any{
		"spiffe_id": e.GetSpiffeId(), "parent_id": e.GetParentId(),
		"selectors": e.GetSelectors(), "revision": e.GetRevision(),
	}
	if fw := e.GetFederatesWith(); len(fw) > 0 {
		details["federates_with"] = fw
	}
	return change{
		action:  action,
		target:  e.GetId(),
		details: details,
		attrs: []slog.Attr{
			slog.String(telemetry.EntryID, e.GetId()),
			slog.String(telemetry.SPIFFEID, e.GetSpiffeId()),
			slog.String(telemetry.ParentID, e.GetParentId()),
			slog.Int64(telemetry.Revision, e.GetRevision()),
		},
	}
}

// auditEntry records a change to an entry: out when it succeeded, else
// the entry the request carried.
func (s *Service) auditEntry(ctx context.Context, action string, out, requested *typesv1.Entry, err error) {
	if err != nil || out == nil {
		out = requested
	}
	s.audit(ctx, entryChange(action, out), err)
}

// CreateEntry validates and stores one entry.
func (h *entryService) CreateEntry(ctx context.Context, req *adminv1.CreateEntryRequest) (_ *adminv1.CreateEntryResponse, err error) {
	e := req.GetEntry()
	var out *typesv1.Entry
	defer func() { h.s.auditEntry(ctx, actionEntryCreate, out, e, err) }()
	if err := h.s.prepareNew(e); err != nil {
		return nil, invalidArgument(err)
	}
	created, errs, err := h.s.store.CreateEntries(ctx, []*typesv1.Entry{e})
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	if errs[0] != nil {
		return nil, h.s.storeError(ctx, errs[0])
	}
	out = created[0]
	return &adminv1.CreateEntryResponse{Entry: out}, nil
}

// BatchCreateEntries validates every entry, stores the valid ones in one
// store call and reports each entry's outcome in request order. Each
// entry's outcome is its own audit record; a batch refused whole is one.
func (h *entryService) BatchCreateEntries(ctx context.Context, req *adminv1.BatchCreateEntriesRequest) (*adminv1.BatchCreateEntriesResponse, error) {
	in := req.GetEntries()
	var err error
	switch {
	case len(in) == 0:
		err = invalidArgument(errors.New("entries: at least one entry is required"))
	case len(in) > MaxBatch:
		err = invalidArgument(fmt.Errorf("entries: %d entries, at most %d per call: split them into several calls", len(in), MaxBatch))
	}
	if err != nil {
		h.s.audit(ctx, change{action: actionEntryCreate, details: map[string]any{"batch": true, "count": len(in)}}, err)
		return nil, err
	}
	resp, err := h.batchCreate(ctx, in)
	for i, r := range resp.GetResults() {
		itemErr := err
		if code := r.GetStatus().GetCode(); code != 0 {
			itemErr = status.Error(codes.Code(code), r.GetStatus().GetMessage())
		}
		ch := entryChange(actionEntryCreate, r.GetEntry())
		if r.GetEntry() == nil {
			ch = entryChange(actionEntryCreate, in[i])
		}
		ch.details["batch"], ch.details["index"] = true, i
		h.s.audit(ctx, ch, itemErr)
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// batchCreate does BatchCreateEntries' work. On a store failure the
// results are still returned, for the audit records, with the error.
func (h *entryService) batchCreate(ctx context.Context, in []*typesv1.Entry) (*adminv1.BatchCreateEntriesResponse, error) {
	results := make([]*adminv1.BatchCreateEntriesResponse_Result, len(in))
	valid := make([]*typesv1.Entry, 0, len(in))
	index := make([]int, 0, len(in)) // index[j] is valid[j]'s position in the request
	for i, e := range in {
		if err := h.s.prepareNew(e); err != nil {
			results[i] = failed(codes.InvalidArgument, err.Error())
			continue
		}
		valid = append(valid, e)
		index = append(index, i)
	}
	if len(valid) > 0 {
		created, errs, err := h.s.store.CreateEntries(ctx, valid)
		if err != nil {
			for j, i := range index {
				results[i] = &adminv1.BatchCreateEntriesResponse_Result{Entry: valid[j]}
			}
			return &adminv1.BatchCreateEntriesResponse{Results: results}, h.s.storeError(ctx, err)
		}
		for j, i := range index {
			if errs[j] != nil {
				results[i] = failed(h.s.storeCode(ctx, errs[j]))
				continue
			}
			results[i] = &adminv1.BatchCreateEntriesResponse_Result{Status: &adminv1.Status{}, Entry: created[j]}
		}
	}
	return &adminv1.BatchCreateEntriesResponse{Results: results}, nil
}

func failed(code codes.Code, msg string) *adminv1.BatchCreateEntriesResponse_Result {
	return &adminv1.BatchCreateEntriesResponse_Result{Status: &adminv1.Status{Code: int32(code), Message: msg}}
}

// UpdateEntry replaces an entry, checking its revision when one is given.
func (h *entryService) UpdateEntry(ctx context.Context, req *adminv1.UpdateEntryRequest) (_ *adminv1.UpdateEntryResponse, retErr error) {
	e := req.GetEntry()
	var out *typesv1.Entry
	defer func() { h.s.auditEntry(ctx, actionEntryUpdate, out, e, retErr) }()
	err := entry.Validate(h.s.td, e, h.s.limits)
	if e != nil && e.GetId() == "" {
		err = errors.Join(errors.New("entry.id: is required: it names the entry to replace"), err)
	}
	if err != nil {
		return nil, invalidArgument(err)
	}
	entry.Normalize(e)
	e.CreatedAt = 0 // the store keeps the original
	out, err = h.s.store.UpdateEntry(ctx, e)
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	return &adminv1.UpdateEntryResponse{Entry: out}, nil
}

// DeleteEntry removes an entry and returns what it was.
func (h *entryService) DeleteEntry(ctx context.Context, req *adminv1.DeleteEntryRequest) (_ *adminv1.DeleteEntryResponse, retErr error) {
	var out, requested *typesv1.Entry
	defer func() { h.s.auditEntry(ctx, actionEntryDelete, out, requested, retErr) }()
	if err := entry.CheckID(req.GetId()); err != nil {
		return nil, invalidArgument(fmt.Errorf("id: %w", err))
	}
	requested = &typesv1.Entry{Id: req.GetId()}
	out, err := h.s.store.DeleteEntry(ctx, req.GetId())
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	return &adminv1.DeleteEntryResponse{Entry: out}, nil
}

// GetEntry returns one entry.
func (h *entryService) GetEntry(ctx context.Context, req *adminv1.GetEntryRequest) (*adminv1.GetEntryResponse, error) {
	if err := entry.CheckID(req.GetId()); err != nil {
		return nil, invalidArgument(fmt.Errorf("id: %w", err))
	}
	out, err := h.s.store.GetEntry(ctx, req.GetId())
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	return &adminv1.GetEntryResponse{Entry: out}, nil
}

// ListEntries returns one page of the entries matching every filter given.
func (h *entryService) ListEntries(ctx context.Context, req *adminv1.ListEntriesRequest) (*adminv1.ListEntriesResponse, error) {
	size, err := listRequest(req)
	if err != nil {
		return nil, invalidArgument(err)
	}
	entries, next, err := h.s.store.ListEntries(ctx, store.ListEntriesRequest{
		SpiffeID:  req.GetSpiffeId(),
		ParentID:  req.GetParentId(),
		Selectors: req.GetSelectors(),
		PageSize:  size,
		PageToken: req.GetPageToken(),
	})
	if err != nil {
		return nil, h.s.storeError(ctx, err)
	}
	return &adminv1.ListEntriesResponse{Entries: entries, NextPageToken: next}, nil
}

// listRequest checks a ListEntries request and returns the page size.
func listRequest(req *adminv1.ListEntriesRequest) (int, error) {
	size, err := pageSize(req.GetPageSize(), req.GetPageToken())
	errs := []error{err}
	for _, f := range []struct{ field, value string }{
		{"spiffe_id", req.GetSpiffeId()},
		{"parent_id", req.GetParentId()},
	} {
		if f.value == "" {
			continue
		}
		if _, err := spiffeid.FromString(f.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a valid SPIFFE ID: %w", f.field, f.value, err))
		}
	}
	if n := len(req.GetSelectors()); n > entry.MaxSelectors {
		errs = append(errs, fmt.Errorf("selectors: %d selectors, at most %d allowed", n, entry.MaxSelectors))
	} else {
		for i, s := range req.GetSelectors() {
			if _, err := selector.Parse(s); err != nil {
				errs = append(errs, fmt.Errorf("selectors[%d]: %w", i, err))
			}
		}
	}
	return size, errors.Join(errs...)
}

// pageSize applies the paging rules shared by the List RPCs.
func pageSize(size int32, token string) (int, error) {
	var errs []error
	switch {
	case size < 0:
		errs = append(errs, fmt.Errorf("page_size: %d is negative; use 0 for the default of %d", size, DefaultPageSize))
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	if len(token) > maxPageToken {
		errs = append(errs, fmt.Errorf("page_token: is %d bytes; pass the next_page_token of the previous page", len(token)))
	}
	return int(size), errors.Join(errs...)
}
