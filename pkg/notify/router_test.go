package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// team is one team's webhook endpoint, which checks every delivery's
// signature against the team's own secret.
type team struct {
	t      *testing.T
	secret []byte
	srv    *httptest.Server
	got    chan Body
	// hold, if set, keeps every request waiting until it is closed: an
	// endpoint that is down without refusing connections.
	hold chan struct{}
}

func newTeam(t *testing.T, name string, hold bool) *team {
	t.Helper()
	tm := &team{t: t, secret: []byte(strings.Repeat(name, 40/len(name)+1)), got: make(chan Body, 100)}
	if hold {
		tm.hold = make(chan struct{})
	}
	tm.srv = httptest.NewServer(http.HandlerFunc(tm.serve))
	t.Cleanup(tm.srv.Close)
	if hold {
		// Registered after Close, so it runs first: Close waits for
		// the requests that are held.
		t.Cleanup(tm.release)
	}
	return tm
}

func (tm *team) release() {
	select {
	case <-tm.hold:
	default:
		close(tm.hold)
	}
}

func (tm *team) serve(w http.ResponseWriter, req *http.Request) {
	if tm.hold != nil {
		<-tm.hold
	}
	raw, _ := io.ReadAll(req.Body)
	if err := Verify(tm.secret, req.Header.Get(HeaderTimestamp), req.Header.Get(HeaderSignature), raw, time.Now(), 0); err != nil {
		tm.t.Errorf("%s: a delivery that does not verify with this route's secret: %v", tm.srv.URL, err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var b Body
	if err := json.Unmarshal(raw, &b); err != nil {
		tm.t.Errorf("body %s: %v", raw, err)
	}
	w.WriteHeader(http.StatusNoContent)
	tm.got <- b
}

// next waits for the next delivery, generously.
func (tm *team) next() Body {
	tm.t.Helper()
	select {
	case b := <-tm.got:
		return b
	case <-time.After(10 * time.Second):
		tm.t.Fatalf("%s received nothing within 10s", tm.srv.URL)
		return Body{}
	}
}

// none checks that nothing more arrived.
func (tm *team) none() {
	tm.t.Helper()
	select {
	case b := <-tm.got:
		tm.t.Errorf("%s received %s for %s, want nothing", tm.srv.URL, b.Type, b.Owner)
	default:
	}
}

func (tm *team) webhook() WebhookConfig {
	return WebhookConfig{URL: tm.srv.URL + "/hooks/T0KEN", Secret: tm.secret, MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond, Timeout: time.Minute, DrainTimeout: 200 * time.Millisecond}
}

// runRouter builds and runs a router with a debug log and a registry.
func runRouter(t *testing.T, cfg RouterConfig) (*Router, *prometheus.Registry, func() string) {
	t.Helper()
	reg, logs, mu := prometheus.NewRegistry(), &bytes.Buffer{}, &sync.Mutex{}
	cfg.Metrics = reg
	cfg.Log = slog.New(slog.NewTextHandler(lockedWriter{mu, logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := NewRouter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, reg, func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
}

func msg(typ, owner string) Notification {
	return Notification{Type: typ, Owner: owner, Subject: "spiffe://example.org/agent/a", Data: map[string]any{"k": "v"}}
}

// metric returns the value of the counter name with exactly labels, or -1.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if sameLabels(m.GetLabel(), labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

func sameLabels(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if want[l.GetName()] != l.GetValue() {
			return false
		}
	}
	return true
}

func TestRouter_SendsEachOwnerToItsTeamSignedWithItsSecret(t *testing.T) {
	payments, infra, fallback := newTeam(t, "payments", false), newTeam(t, "infra", false), newTeam(t, "default", false)
	def := fallback.webhook()
	r, reg, _ := runRouter(t, RouterConfig{
		Routes: []RouteConfig{
			{Name: "payments", Owners: []string{"*@payments.example.org", "alice@example.org"}, Webhook: payments.webhook()},
			{Owners: []string{"*@infra.example.org"}, Webhook: infra.webhook()},
		},
		Default: &def,
	})
	for _, tc := range []struct {
		owner string
		to    *team
	}{
		{"bob@payments.example.org", payments},
		{"Alice@Example.ORG", payments}, // case does not matter
		{"carol@infra.example.org", infra},
		{"dave@example.org", fallback},
		{"eve@eu.payments.example.org.evil", fallback},
		{"", fallback},
	} {
		r.Notify(context.Background(), msg(TypeReputationAlert, tc.owner))
		if b := tc.to.next(); b.Owner != tc.owner {
			t.Errorf("%q: the route's endpoint received %q", tc.owner, b.Owner)
		}
		for _, other := range []*team{payments, infra, fallback} {
			other.none()
		}
	}
	// Metrics are labelled by route name, never by URL.
	for route, want := range map[string]float64{"payments": 2, "route-1": 1, "default": 3} {
		labels := map[string]string{"route": route, "type": TypeReputationAlert}
		waitFor(t, func() bool { return metric(t, reg, "nhid_notify_sent_total", labels) == want })
	}
}

func TestRouter_TypeFilteredRouteTakesOnlyItsTypes(t *testing.T) {
	pager, chat := newTeam(t, "pager", false), newTeam(t, "chat", false)
	r, _, _ := runRouter(t, RouterConfig{Routes: []RouteConfig{
		{Name: "pager", Owners: []string{"*@payments.example.org"}, Types: []string{TypeApprovalRequested}, Webhook: pager.webhook()},
		{Name: "chat", Owners: []string{"*@payments.example.org"}, Webhook: chat.webhook()},
	}})
	r.Notify(context.Background(), msg(TypeApprovalRequested, "bob@payments.example.org"))
	if b := pager.next(); b.Type != TypeApprovalRequested {
		t.Errorf("pager received %s", b.Type)
	}
	r.Notify(context.Background(), msg(TypeReputationRestricted, "bob@payments.example.org"))
	if b := chat.next(); b.Type != TypeReputationRestricted {
		t.Errorf("chat received %s", b.Type)
	}
	pager.none()
	chat.none()
}

func TestRouter_UnroutedNotificationsAreDroppedCountedAndLoggedWithoutURLs(t *testing.T) {
	payments := newTeam(t, "payments", false)
	r, reg, logs := runRouter(t, RouterConfig{Routes: []RouteConfig{
		{Name: "payments", Owners: []string{"*@payments.example.org"}, Webhook: payments.webhook()},
	}})
	r.Notify(context.Background(), msg(TypeApprovalRequested, "dave@example.org"))
	r.Notify(context.Background(), msg(TypeReputationAlert, ""))
	r.Notify(context.Background(), msg(TypeReputationAlert, "bob@payments.example.org"))
	payments.next()
	payments.none()
	for _, tc := range []struct{ typ, reason string }{
		{TypeApprovalRequested, UnroutedNoRoute}, {TypeReputationAlert, UnroutedNoOwner},
	} {
		if n := metric(t, reg, "nhid_notify_unrouted_total", map[string]string{"type": tc.typ, "reason": tc.reason}); n != 1 {
			t.Errorf("unrouted_total{%s,%s} = %v, want 1", tc.typ, tc.reason, n)
		}
	}
	out := logs()
	if !strings.Contains(out, "notification not routed") || !strings.Contains(out, "owner=dave@example.org") ||
		!strings.Contains(out, "type="+TypeApprovalRequested) {
		t.Errorf("the drop is not logged with type and owner:\n%s", out)
	}
	for _, leak := range []string{"T0KEN", string(payments.secret)} {
		if strings.Contains(out, leak) {
			t.Errorf("the log holds %q:\n%s", leak, out)
		}
	}
}

func TestRouter_AnEndpointThatIsDownDelaysOnlyItsOwnRoute(t *testing.T) {
	down, up := newTeam(t, "down", true), newTeam(t, "up", false)
	fallback := newTeam(t, "default", false)
	def := fallback.webhook()
	r, _, _ := runRouter(t, RouterConfig{Routes: []RouteConfig{
		{Name: "down", Owners: []string{"*@down.example.org"}, Webhook: down.webhook()},
		{Name: "up", Owners: []string{"*@up.example.org"}, Webhook: up.webhook()},
	}, Default: &def})
	// Enough to hold every worker of the down route, and queue more.
	for range 2 * DefaultWorkers {
		r.Notify(context.Background(), msg(TypeApprovalRequested, "ops@down.example.org"))
	}
	r.Notify(context.Background(), msg(TypeApprovalRequested, "ops@up.example.org"))
	r.Notify(context.Background(), msg(TypeApprovalRequested, "ops@example.org"))
	// Both arrive while every request to the down endpoint is still held
	// (its timeout is a minute): its route delays no other.
	up.next()
	fallback.next()
	down.none()
	down.release()
	for range 2 * DefaultWorkers {
		down.next()
	}
}

func TestRouter_RunDrainsEveryRouteWhenItStops(t *testing.T) {
	a, b := newTeam(t, "team-a", false), newTeam(t, "team-b", false)
	fallback := newTeam(t, "default", false)
	def := fallback.webhook()
	r, err := NewRouter(RouterConfig{Routes: []RouteConfig{
		{Owners: []string{"*@a.example.org"}, Webhook: a.webhook()},
		{Owners: []string{"*@b.example.org"}, Webhook: b.webhook()},
	}, Default: &def})
	if err != nil {
		t.Fatal(err)
	}
	for _, owner := range []string{"x@a.example.org", "y@a.example.org", "x@b.example.org", "z@example.org"} {
		r.Notify(context.Background(), msg(TypeReputationAlert, owner))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	for tm, n := range map[*team]int{a: 2, b: 1, fallback: 1} {
		if got := len(tm.got); got != n {
			t.Errorf("%s: %d delivered while stopping, want %d", tm.srv.URL, got, n)
		}
	}
	r.Notify(context.Background(), msg(TypeReputationAlert, "x@a.example.org"))
	if n := counter(t, r.routes[0].w.metrics.failed.WithLabelValues(TypeReputationAlert, "stopped")); n != 1 {
		t.Errorf("a notification after Run returned: dropped %v, want 1", n)
	}
	if err := r.Run(context.Background()); err == nil {
		t.Error("a second Run was accepted")
	}
}

func TestNewRouter_ReportsEveryConfigProblemAndRegistersNothing(t *testing.T) {
	good := WebhookConfig{URL: "https://hooks.example.org/x", Secret: secret}
	reg := prometheus.NewRegistry()
	_, err := NewRouter(RouterConfig{
		Routes: []RouteConfig{
			{Name: "Payments!", Owners: []string{"*@payments.example.org"}, Webhook: good},
			{Name: "default", Owners: nil, Webhook: good},
			{Owners: []string{"", " a@example.org", "a\nb"}, Types: []string{"approval.requested", "approval.granted"}, Webhook: good},
			{Name: "route-2", Owners: []string{"*"}, Webhook: WebhookConfig{URL: "ftp://x", Secret: []byte("short")}},
		},
		Default: &WebhookConfig{URL: "https://hooks.example.org/y", Secret: []byte("short")},
		Metrics: reg,
	})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`Routes[0] (Payments!): Name: "Payments!" is not 1 to 63 lower-case`,
		`Routes[1] (default): Name: "default" is reserved`,
		"Routes[1] (default): Owners: at least one owner pattern required",
		"Routes[2] (route-2): Owners[0]: empty owner pattern",
		"Routes[2] (route-2): Owners[1]: owner pattern \" a@example.org\" has leading or trailing spaces",
		"Routes[2] (route-2): Owners[2]: owner pattern \"a\\nb\" holds a control character",
		`Routes[2] (route-2): Types[1]: unknown notification type "approval.granted"`,
		"Routes[3] (route-2): Name: already the name of Routes[2]",
		`Routes[3] (route-2): webhook config: URL: scheme "ftp"`,
		"Routes[3] (route-2): webhook config: Secret: is 5 bytes",
		"Default: webhook config: Secret: is 5 bytes",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Errorf("a refused config registered %d metric families", len(mfs))
	}
	many := make([]RouteConfig, MaxRoutes+1)
	for i := range many {
		many[i] = RouteConfig{Owners: []string{"*"}, Webhook: good}
	}
	if _, err := NewRouter(RouterConfig{Routes: many}); err == nil || !strings.Contains(err.Error(), "at most 100 allowed") {
		t.Errorf("%d routes: %v", len(many), err)
	}
}

func TestOwnerPattern_Match(t *testing.T) {
	for _, tc := range []struct {
		pattern, owner string
		want           bool
	}{
		{"alice@example.org", "alice@example.org", true},
		{"alice@example.org", "ALICE@Example.Org", true},
		{"alice@example.org", "alice@example.org.evil", false},
		{"alice@example.org", "malice@example.org", false},
		{"*@example.org", "bob@example.org", true},
		{"*@example.org", "@example.org", true},
		{"*@example.org", "bob@eu.example.org", false},
		{"*.example.org", "bob@eu.example.org", true},
		{"*", "", true},
		{"*", "anyone", true},
		{"team-*-oncall", "team-payments-oncall", true},
		{"team-*-oncall", "team--oncall", true},
		{"team-*-oncall", "team-oncall", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYcZ", false},
		{"**@x.org", "y@x.org", true},
		{"?@x.org", "y@x.org", false}, // only '*' is special
		{"[ab]@x.org", "[ab]@x.org", true},
		{"josé@例え.jp", "JOSÉ@例え.jp", true},
		{"*é", "ée", false},
	} {
		p, err := ParseOwnerPattern(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if got := p.Match(tc.owner); got != tc.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tc.pattern, tc.owner, got, tc.want)
		}
	}
}
