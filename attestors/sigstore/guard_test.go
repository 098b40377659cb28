package sigstore

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPlainHTTPGuard_AllowsOnlyLoopbackAndConfiguredRegistries(t *testing.T) {
	g := &plainHTTPGuard{insecure: map[string]bool{"registry.lan:5000": true, "10.0.0.7": true}}
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1:5000", true},
		{"127.3.2.1", true},
		{"[::1]:5000", true},
		{"localhost:5000", true},
		{"registry.lan:5000", true},
		{"registry.lan:5001", false},
		{"10.0.0.7:443", true},
		{"10.0.0.8:5000", false},
		{"192.168.1.10:5000", false},
		{"registry.local:5000", false},
		{"localhost.evil.example:5000", false},
		{"ghcr.io", false},
	}
	for _, tt := range tests {
		if got := g.allowsPlainHTTP(tt.host); got != tt.want {
			t.Errorf("allowsPlainHTTP(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestPlainHTTPGuard_RefusesBeforeConnecting(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("the guarded request reached a server")
	}))
	defer srv.Close()
	g := &plainHTTPGuard{next: http.DefaultTransport, insecure: map[string]bool{}}
	// Same server, named by a private address it is not reachable at: the
	// guard must refuse before any dial.
	req := httptest.NewRequest(http.MethodGet, "http://192.168.77.1:5000/v2/", nil)
	_, err := g.RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "refusing plain HTTP") {
		t.Errorf("RoundTrip err = %v, want a refusal", err)
	}
	ok := httptest.NewRequest(http.MethodGet, srv.URL+"/v2/", nil)
	ok.RequestURI = ""
	g2 := &plainHTTPGuard{next: http.DefaultTransport, insecure: map[string]bool{}}
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	resp, err := g2.RoundTrip(ok)
	if err != nil {
		t.Fatalf("loopback request: %v", err)
	}
	resp.Body.Close()
}
