package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	grantv1 "github.com/nhid/nhid/proto/nhid/grant/v1"
)

// printer reports the task's progress, for people or, with JSON, as one
// object per line for programs. It never prints the token.
type printer struct {
	w, errW io.Writer
	json    bool
}

// newPrinter prints to w; text-mode errors go to errW.
func newPrinter(w, errW io.Writer, asJSON bool) *printer {
	return &printer{w: w, errW: errW, json: asJSON}
}

// event is one JSON line.
type event struct {
	Event     string          `json:"event"`
	SPIFFEID  string          `json:"spiffe_id,omitempty"`
	Serial    string          `json:"serial,omitempty"`
	EntryID   string          `json:"entry_id,omitempty"`
	Purpose   string          `json:"purpose,omitempty"`
	Owner     string          `json:"owner,omitempty"`
	GrantID   string          `json:"grant_id,omitempty"`
	State     string          `json:"state,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Rule      string          `json:"rule,omitempty"`
	Scopes    []string        `json:"scopes,omitempty"`
	ExpiresAt int64           `json:"expires_at,omitempty"`
	N         int             `json:"n,omitempty"`
	Status    int             `json:"status,omitempty"`
	Body      json.RawMessage `json:"body,omitempty"`
	What      string          `json:"what,omitempty"`
	Code      string          `json:"code,omitempty"`
	Message   string          `json:"message,omitempty"`
}

func (p *printer) emit(e event, format string, args ...any) {
	if p.json {
		_ = json.NewEncoder(p.w).Encode(e)
		return
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *printer) identity(id *identity) {
	leaf := id.svid.Certificates[0]
	p.emit(event{Event: "identity", SPIFFEID: id.svid.ID.String(), Serial: leaf.SerialNumber.Text(16),
		ExpiresAt: leaf.NotAfter.Unix(), EntryID: id.purpose.EntryID, Purpose: id.purpose.Purpose, Owner: id.purpose.Owner},
		"I am %s (serial %s, expires %s)\n  purpose: %q\n  owner:   %q",
		id.svid.ID, leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339), id.purpose.Purpose, id.purpose.Owner)
}

func (p *printer) status(st *grantv1.GrantStatus) {
	e := event{Event: "status", GrantID: st.GetGrantId(), State: strings.TrimPrefix(st.GetState().String(), "GRANT_STATE_"),
		Reason: st.GetReason(), Rule: st.GetRule(), Scopes: st.GetScopes(), ExpiresAt: st.GetExpiresAt()}
	switch st.GetState() {
	case grantv1.GrantState_GRANT_STATE_PENDING_APPROVAL:
		// While it waits, expires_at is the approval deadline.
		p.emit(e, "grant %s waits for a human approval (until %s): %s", st.GetGrantId(),
			time.Unix(st.GetExpiresAt(), 0).UTC().Format(time.RFC3339), st.GetReason())
	case grantv1.GrantState_GRANT_STATE_GRANTED:
		p.emit(e, "granted %s by rule %q: scopes %s until %s", st.GetGrantId(), st.GetRule(),
			strings.Join(st.GetScopes(), " "), time.Unix(st.GetExpiresAt(), 0).UTC().Format(time.RFC3339))
	case grantv1.GrantState_GRANT_STATE_DENIED:
		p.emit(e, "denied by rule %q: %s", st.GetRule(), st.GetReason())
	default:
		p.emit(e, "grant %s: state %s", st.GetGrantId(), st.GetState())
	}
}

func (p *printer) call(r callResult) {
	body := string(r.Body)
	if body == "" {
		body = r.Text
	}
	p.emit(event{Event: "call", N: r.N, Status: r.Status, Body: r.Body, Message: r.Text},
		"call %d: HTTP %d %s", r.N, r.Status, strings.TrimSpace(body))
}

func (p *printer) released(grantID string) {
	p.emit(event{Event: "released", GrantID: grantID}, "released %s", grantID)
}

// fail reports an error; gRPC errors keep their code.
func (p *printer) fail(what string, err error) {
	e := event{Event: "error", What: what, Message: err.Error()}
	if st, ok := status.FromError(err); ok {
		e.Code, e.Message = st.Code().String(), st.Message()
	}
	prefix := ""
	if what != "" {
		prefix = what + ": "
	}
	if p.json {
		p.emit(e, "")
		return
	}
	if e.Code != "" {
		fmt.Fprintf(p.errW, "agent-task: %s%s: %s\n", prefix, e.Code, e.Message)
		return
	}
	fmt.Fprintf(p.errW, "agent-task: %s%s\n", prefix, e.Message)
}
