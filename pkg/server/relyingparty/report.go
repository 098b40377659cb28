package relyingparty

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"

	"github.com/nhid/nhid/pkg/agentid"
	"github.com/nhid/nhid/pkg/reputation"
	"github.com/nhid/nhid/pkg/store"
	"github.com/nhid/nhid/pkg/telemetry"
)

// PathReport is where relying parties report misuse (report.go).
const PathReport = "/report"

// Defaults of the report rate limit: each reporter may send ReportBurst
// reports at once and then DefaultReportRate.
const (
	DefaultReportRate  = rate.Limit(10.0 / 60) // 10 a minute
	DefaultReportBurst = 10
	// MaxReportReasonBytes bounds a report's reason.
	MaxReportReasonBytes = 1000
	// maxReporters bounds the per-reporter limiters kept; idle ones are
	// dropped first when it is reached.
	maxReporters = 10000
)

// Report kinds a relying party may send; both cost the subject
// reputation.KindMisuseReported's weight.
const (
	ReportMisuse     = "misuse"
	ReportOutOfScope = "out_of_scope"
)

// Observer takes reputation events; *reputation.Service satisfies it.
type Observer interface {
	Observe(ctx context.Context, ev reputation.Event) (reputation.Standing, error)
}

// reportRequest is the body of POST /report.
type reportRequest struct {
	SPIFFEID string `json:"spiffe_id"`
	Kind     string `json:"kind"`
	GrantID  string `json:"grant_id"`
	Reason   string `json:"reason"`
}

// reports holds the report endpoint's state: a rate limiter per reporter.
type reports struct {
	rate    rate.Limit
	burst   int
	mu      sync.Mutex
	byID    map[string]*rate.Limiter
	answers *prometheus.CounterVec
}

func newReports(cfg Config) *reports {
	return &reports{
		rate: cfg.ReportRate, burst: cfg.ReportBurst, byID: make(map[string]*rate.Limiter),
		answers: telemetry.NewCounterVec(cfg.Metrics, "relyingparty", "reports_total", "Misuse reports by answer (recorded, invalid, rate_limited, error).", "answer"),
	}
}

// allow takes one report from reporter's budget at now, or says how long
// to wait.
func (r *reports) allow(reporter string, now time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lim, ok := r.byID[reporter]
	if !ok {
		if len(r.byID) >= maxReporters {
			r.pruneLocked(now)
		}
		lim = rate.NewLimiter(r.rate, r.burst)
		r.byID[reporter] = lim
	}
	res := lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// pruneLocked drops the limiters of reporters whose budget is full again:
// forgetting them changes nothing. If every one is busy, it starts over.
func (r *reports) pruneLocked(now time.Time) {
	for id, lim := range r.byID {
		if lim.TokensAt(now) >= float64(r.burst) {
			delete(r.byID, id)
		}
	}
	if len(r.byID) >= maxReporters {
		clear(r.byID)
	}
}

// report answers POST /report: a relying party, authenticated by its
// X.509-SVID, reports that a subject misused a grant or used it out of
// scope. 202 on success; errors are OAuth-style JSON documents.
func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	client, ok := s.client(w, r)
	if !ok {
		return
	}
	answer, code := s.handleReport(w, r, client)
	s.reports.answers.WithLabelValues(answer).Inc()
	if code == http.StatusAccepted {
		writeJSON(w, code, map[string]string{"status": "recorded"})
	}
}

// handleReport does the work of report and says how it answered.
func (s *Server) handleReport(w http.ResponseWriter, r *http.Request, client spiffeid.ID) (string, int) {
	if agentid.IsReserved(client) {
		writeError(w, http.StatusForbidden, "access_denied", "nhid's own identities do not report misuse")
		return "invalid", http.StatusForbidden
	}
	if wait, ok := s.reports.allow(client.String(), s.cfg.Clock.Now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeError(w, http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("too many reports from %s: retry in %s", client, wait.Round(time.Second)))
		return "rate_limited", http.StatusTooManyRequests
	}
	req, ok := s.readReport(w, r)
	if !ok {
		return "invalid", http.StatusBadRequest
	}
	subject, err := s.checkReport(req, client)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return "invalid", http.StatusBadRequest
	}
	owner, err := s.reportedGrantOwner(r.Context(), req)
	if err != nil {
		return s.reportFailure(w, r, err)
	}
	_, err = s.cfg.Reputation.Observe(r.Context(), reputation.Event{
		SPIFFEID: subject.String(), Owner: owner, Kind: reputation.KindMisuseReported,
		Reason: req.Kind + ": " + req.Reason, Reporter: client.String(), GrantID: req.GrantID,
	})
	if err != nil {
		return s.reportFailure(w, r, err)
	}
	s.log.InfoContext(r.Context(), "misuse reported", "reporter", client.String(), telemetry.SPIFFEID, subject.String(),
		"kind", req.Kind, telemetry.GrantID, req.GrantID, telemetry.Reason, req.Reason)
	return "recorded", http.StatusAccepted
}

// errNoSuchGrant is the one answer for a grant_id that is unknown or
// another subject's, so that reports cannot probe for grant ids.
var errNoSuchGrant = errors.New("grant_id: the subject has no grant with this id")

// reportedGrantOwner checks the grant a report names, if any, and returns
// its owner (the person to notify).
func (s *Server) reportedGrantOwner(ctx context.Context, req reportRequest) (string, error) {
	if req.GrantID == "" {
		return "", nil
	}
	g, err := s.cfg.Grants.GetGrant(ctx, req.GrantID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", errNoSuchGrant
	case err != nil:
		return "", fmt.Errorf("read grant %s: %w", req.GrantID, err)
	case g.GetSpiffeId() != req.SPIFFEID:
		return "", errNoSuchGrant
	}
	return g.GetOwner(), nil
}

// reportFailure answers a report that failed after validation.
func (s *Server) reportFailure(w http.ResponseWriter, r *http.Request, err error) (string, int) {
	switch {
	case errors.Is(err, errNoSuchGrant):
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return "invalid", http.StatusBadRequest
	case errors.Is(err, reputation.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return "invalid", http.StatusBadRequest
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed):
		s.log.WarnContext(r.Context(), "report not recorded", telemetry.Error, err.Error())
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the report could not be stored; retry later")
		return "error", http.StatusServiceUnavailable
	}
	s.log.ErrorContext(r.Context(), "report not recorded", telemetry.Error, err.Error())
	writeError(w, http.StatusInternalServerError, "server_error", "the report could not be recorded; retry later")
	return "error", http.StatusInternalServerError
}

// readReport decodes the body strictly: JSON, one object, known fields
// only, within MaxBodyBytes.
func (s *Server) readReport(w http.ResponseWriter, r *http.Request) (reportRequest, bool) {
	var req reportRequest
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "invalid_request", "the body must be application/json")
		return req, false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	err = dec.Decode(&req)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("data after the JSON object")
	}
	if err != nil {
		if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "invalid_request", fmt.Sprintf("the body exceeds %d bytes", s.cfg.MaxBodyBytes))
			return req, false
		}
		writeError(w, http.StatusBadRequest, "invalid_request", "the body is not one JSON report object: "+err.Error())
		return req, false
	}
	return req, true
}

// checkReport validates the fields, naming each that is wrong.
func (s *Server) checkReport(req reportRequest, reporter spiffeid.ID) (spiffeid.ID, error) {
	var errs []string
	subject, err := spiffeid.FromString(req.SPIFFEID)
	switch {
	case req.SPIFFEID == "":
		errs = append(errs, "spiffe_id: required")
	case len(req.SPIFFEID) > reputation.MaxSPIFFEIDBytes:
		errs = append(errs, fmt.Sprintf("spiffe_id: is %d bytes, at most %d allowed", len(req.SPIFFEID), reputation.MaxSPIFFEIDBytes))
	case err != nil:
		errs = append(errs, "spiffe_id: not a SPIFFE ID: "+err.Error())
	case subject.TrustDomain() != s.cfg.TrustDomain:
		errs = append(errs, fmt.Sprintf("spiffe_id: %s is not in the trust domain %s", subject, s.cfg.TrustDomain))
	case agentid.IsReserved(subject):
		errs = append(errs, "spiffe_id: nhid's own identities cannot be reported")
	case subject == reporter:
		errs = append(errs, "spiffe_id: a relying party cannot report itself")
	}
	if req.Kind != ReportMisuse && req.Kind != ReportOutOfScope {
		errs = append(errs, fmt.Sprintf("kind: must be %q or %q", ReportMisuse, ReportOutOfScope))
	}
	switch {
	case strings.TrimSpace(req.Reason) == "":
		errs = append(errs, "reason: required")
	case len(req.Reason) > MaxReportReasonBytes:
		errs = append(errs, fmt.Sprintf("reason: is %d bytes, at most %d allowed", len(req.Reason), MaxReportReasonBytes))
	}
	if len(req.GrantID) > reputation.MaxGrantIDBytes {
		errs = append(errs, fmt.Sprintf("grant_id: is %d bytes, at most %d allowed", len(req.GrantID), reputation.MaxGrantIDBytes))
	}
	if len(errs) > 0 {
		return spiffeid.ID{}, errors.New(strings.Join(errs, "; "))
	}
	return subject, nil
}
