package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/pkg/server"
)

func TestToServerConfig_NotifyRoutes(t *testing.T) {
	payments := writeSecret(t, strings.Repeat("p", 40)+"\n", 0o600)
	pager := writeSecret(t, strings.Repeat("q", 40), 0o600)
	fallback := writeSecret(t, strings.Repeat("d", 40), 0o600)
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  notify:
    webhook: {url: "https://hooks.example.org/nhid", secret_file: `+fallback+`}
    routes:
      - name: payments-pager
        owners: ["*@payments.example.org", "alice@example.org"]
        types: [approval.requested]
        webhook: {url: "https://pager.example.org/T0KEN", secret_file: `+pager+`, timeout: 3s, max_attempts: 20}
      - owners: ["*@payments.example.org"]
        webhook: {url: "http://chat-bridge.payments.internal:8080/nhid", secret_file: `+payments+`}
`)
	cfg := mustConvert(t, "--config", path)
	want := server.NotifyConfig{
		Webhook: server.WebhookConfig{URL: "https://hooks.example.org/nhid", SecretFile: fallback},
		Routes: []server.NotifyRoute{
			{
				Name: "payments-pager", Owners: []string{"*@payments.example.org", "alice@example.org"},
				Types: []string{"approval.requested"},
				Webhook: server.WebhookConfig{URL: "https://pager.example.org/T0KEN", SecretFile: pager,
					Timeout: 3 * time.Second, MaxAttempts: 20},
			},
			{
				Name: "route-1", Owners: []string{"*@payments.example.org"},
				Webhook: server.WebhookConfig{URL: "http://chat-bridge.payments.internal:8080/nhid", SecretFile: payments},
			},
		},
	}
	if diff := cmp.Diff(want, cfg.Notify); diff != "" {
		t.Errorf("notify (-want +got):\n%s", diff)
	}
	if _, err := server.New(serverConfigForCheck(cfg)); err != nil {
		t.Errorf("the server refuses the converted settings: %v", err)
	}
}

func TestToServerConfig_NotifyRoutesWithoutADefaultWebhook(t *testing.T) {
	secret := writeSecret(t, strings.Repeat("k", 40), 0o600)
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  notify:
    routes: [{owners: ["*"], webhook: {url: "https://hooks.example.org/all", secret_file: `+secret+`}}]
`)
	cfg := mustConvert(t, "--config", path)
	if cfg.Notify.Webhook != (server.WebhookConfig{}) || len(cfg.Notify.Routes) != 1 || cfg.Notify.Routes[0].Name != "route-0" {
		t.Errorf("notify = %+v", cfg.Notify)
	}
}

func TestToServerConfig_NotifyRouteProblemsNameTheirPaths(t *testing.T) {
	good := writeSecret(t, strings.Repeat("k", 40), 0o600)
	worldReadable := writeSecret(t, strings.Repeat("k", 40), 0o644)
	path := writeConfig(t, `version: 1
server:
  data_dir: /srv/nhid
  notify:
    routes:
      - webhook: {url: "https://a.example.org/x", secret_file: `+good+`}
      - owners: ["*@x.org", "", " bob@x.org"]
        types: [approval.requested, approval.granted]
        webhook: {secret_file: `+good+`}
      - name: Payments
        owners: ["*"]
        webhook: {url: "ftp://b.example.org/x", secret_file: `+worldReadable+`, timeout: 1h, max_attempts: 500}
      - name: route-1
        owners: ["*"]
        webhook: {url: "https://c.example.org/x"}
      - name: default
        owners: ["*"]
        webhook: {url: "https://d.example.org/x", secret_file: `+good+`}
`)
	_, err := convertArgs(t, "--config", path)
	if err == nil {
		t.Fatal("toServerConfig accepted bad routes")
	}
	for _, want := range []string{
		"server.notify.routes[0].owners: at least one owner pattern required",
		"server.notify.routes[1].owners[1]: empty owner pattern",
		`server.notify.routes[1].owners[2]: owner pattern " bob@x.org" has leading or trailing spaces`,
		`server.notify.routes[1].types[1]: unknown notification type "approval.granted"; types are approval.requested, reputation.alert, reputation.restricted`,
		"server.notify.routes[1].webhook.url: required",
		`server.notify.routes[2].name: "Payments" is not 1 to 63 lower-case letters`,
		`server.notify.routes[2].webhook.url: scheme "ftp"`,
		"server.notify.routes[2].webhook.secret_file: webhook secret: " + worldReadable + " is readable by other users",
		"server.notify.routes[2].webhook.timeout",
		"server.notify.routes[2].webhook.max_attempts",
		`server.notify.routes[3].name: "route-1" is already the name of server.notify.routes[1]`,
		"server.notify.routes[3].webhook.secret_file: required with url",
		`server.notify.routes[4].name: "default" is reserved for the default webhook`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}

	for name, tc := range map[string]struct{ body, want string }{
		"unknown key":       {`routes: [{owner: ["*"]}]`, "server.notify.routes[0].owner"},
		"owners not a list": {`routes: [{owners: "*@x.org"}]`, "server.notify.routes[0].owners"},
		"route not a map":   {`routes: ["*@x.org"]`, "server.notify.routes[0]"},
		"too many routes":   {"routes: [" + strings.Repeat("{owners: ['*']},", 101) + "]", "server.notify.routes: 101 routes, at most 100 allowed"},
	} {
		path := writeConfig(t, "version: 1\nserver:\n  data_dir: /srv/nhid\n  notify: {"+tc.body+"}\n")
		s, err := resolveArgs(t, "--config", path)
		if err == nil {
			_, err = toServerConfig(s)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}
