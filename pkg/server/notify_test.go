package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhid/nhid/pkg/notify"
)

// hook is a webhook endpoint that hands on the owner of every delivery
// whose signature verifies with its secret.
type hook struct {
	url, secretFile string
	owners          chan string
}

func newHook(t *testing.T, secret string) *hook {
	t.Helper()
	h := &hook{secretFile: filepath.Join(t.TempDir(), "secret"), owners: make(chan string, 10)}
	if err := os.WriteFile(h.secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify([]byte(secret), r.Header.Get(notify.HeaderTimestamp), r.Header.Get(notify.HeaderSignature), body, time.Now(), 0); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		owner := "?"
		if _, rest, ok := strings.Cut(string(body), `"owner":"`); ok {
			owner, _, _ = strings.Cut(rest, `"`)
		}
		h.owners <- owner
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL + "/hook"
	return h
}

func (h *hook) cfg() WebhookConfig { return WebhookConfig{URL: h.url, SecretFile: h.secretFile} }

func (h *hook) want(t *testing.T, owner string) {
	t.Helper()
	select {
	case got := <-h.owners:
		if got != owner {
			t.Errorf("%s received the notification of %q, want %q", h.url, got, owner)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("%s received nothing within %v, want %q's notification", h.url, waitTimeout, owner)
	}
}

func TestServer_NotifyRoutesSendEachOwnerToItsWebhook(t *testing.T) {
	team, fallback := newHook(t, strings.Repeat("t", 40)), newHook(t, strings.Repeat("d", 40))
	cfg := testConfig(t, t.TempDir(), t.TempDir())
	cfg.Notify = NotifyConfig{Webhook: fallback.cfg(), Routes: []NotifyRoute{
		{Name: "payments", Owners: []string{"*@payments.example.org"}, Webhook: team.cfg()},
	}}
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &components{}
	if err := srv.buildNotifier(c); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	srv.runNotifier(ctx, c, func(f func() error) { wg.Go(func() { _ = f() }) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	c.notifier.Notify(ctx, notify.Notification{Type: notify.TypeApprovalRequested, Owner: "bob@payments.example.org"})
	team.want(t, "bob@payments.example.org")
	c.notifier.Notify(ctx, notify.Notification{Type: notify.TypeApprovalRequested, Owner: "ana@example.org"})
	fallback.want(t, "ana@example.org")

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() == "nhid_notify_queue_length" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					routes[l.GetName()+"="+l.GetValue()] = true
				}
			}
		}
	}
	if !routes["route=payments"] || !routes["route=default"] {
		t.Errorf("queue_length labels %v, want route=payments and route=default", routes)
	}
}

func TestServer_NotifyRouteWithABadSecretFailsTheStart(t *testing.T) {
	good := newHook(t, strings.Repeat("g", 40))
	cfg := testConfig(t, filepath.Join(t.TempDir(), "data"), t.TempDir())
	cfg.Notify.Routes = []NotifyRoute{
		{Name: "ops", Owners: []string{"*"}, Webhook: good.cfg()},
		{Name: "payments", Owners: []string{"*"}, Webhook: WebhookConfig{URL: good.url, SecretFile: filepath.Join(t.TempDir(), "none")}},
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "notification route 1 (payments): webhook secret") {
		t.Errorf("Run = %v, want an error naming route 1 (payments)", err)
	}
}
