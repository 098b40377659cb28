package kubeclient

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var podGVK = corev1.SchemeGroupVersion.WithKind("Pod")

// server starts an HTTPS server and returns a client config pinning its
// certificate, with a token file holding "t0ken".
func server(t *testing.T, h http.HandlerFunc) Config {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	block := &pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}
	if err := os.WriteFile(ca, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{URL: srv.URL, CAFile: ca, TokenFile: tok}
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestGet_SendsTheTokenAndDecodesTheObject(t *testing.T) {
	var gotAuth, gotPath string
	cfg := server(t, func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotPath = r.Header.Get("Authorization"), r.URL.Path
		_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns"}}`))
	})
	cfg.URL += "/base/"
	var pod corev1.Pod
	if err := newClient(t, cfg).Get(context.Background(), "/api/v1/namespaces/ns/pods/p", podGVK, &pod); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if gotAuth != "Bearer t0ken" || gotPath != "/base/api/v1/namespaces/ns/pods/p" {
		t.Errorf("request had Authorization %q, path %q", gotAuth, gotPath)
	}
	if pod.Name != "p" || pod.Namespace != "ns" {
		t.Errorf("decoded %s/%s, want ns/p", pod.Namespace, pod.Name)
	}
}

func TestGet_RefusesAnswersItCannotTrust(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		cfg     func(Config) Config
		want    string
	}{
		{"another kind", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"kind":"Node","apiVersion":"v1"}`))
		}, nil, `"v1" "Node", want "v1" "Pod"`},
		{"field names in another case", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"Kind":"Pod","ApiVersion":"v1"}`))
		}, nil, `want "v1" "Pod"`},
		{"oversized body", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"` + strings.Repeat("x", 2048) + `"}}`))
		}, func(c Config) Config { c.MaxResponseBytes = 1024; return c }, "larger than 1024 bytes"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/steal", http.StatusFound)
		}, nil, "redirect"},
		{"status error", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","message":"pods \"p\" not found","code":404}`))
		}, nil, `404 Not Found: pods "p" not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := server(t, tt.handler)
			if tt.cfg != nil {
				cfg = tt.cfg(cfg)
			}
			var pod corev1.Pod
			err := newClient(t, cfg).Get(context.Background(), "/p", podGVK, &pod)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestAPIError_CarriesTheStatus(t *testing.T) {
	cfg := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","reason":"Forbidden","message":"no\nway"}`))
	})
	err := newClient(t, cfg).Get(context.Background(), "/p", podGVK, &corev1.Pod{})
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v, want an *APIError", err)
	}
	want := &APIError{Method: "GET", URL: cfg.URL + "/p", StatusCode: 403, Reason: metav1.StatusReasonForbidden, Message: "no way"}
	if diff := cmp.Diff(want, apiErr); diff != "" {
		t.Errorf("APIError (-want +got):\n%s", diff)
	}
	if !IsAuthError(err) || IsNotFound(err) {
		t.Errorf("IsAuthError = %v, IsNotFound = %v; want true, false", IsAuthError(err), IsNotFound(err))
	}
}

func TestPost_SendsJSON(t *testing.T) {
	var body, ctype string
	cfg := server(t, func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 512)
		n, _ := r.Body.Read(b)
		body, ctype = string(b[:n]), r.Header.Get("Content-Type")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1"}`))
	})
	in := map[string]string{"a": "b"}
	if err := newClient(t, cfg).Post(context.Background(), "/p", in, podGVK, &corev1.Pod{}); err != nil {
		t.Fatalf("Post: %v", err)
	}
	if body != `{"a":"b"}` || ctype != "application/json" {
		t.Errorf("body %q with Content-Type %q", body, ctype)
	}
}

func TestTokenFile_IsCheckedBeforeItIsSent(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]string{
		"empty":         "\n",
		"header split":  "abc\r\nX-Evil: 1",
		"inner space":   "abc def",
		"control bytes": "abc\x00",
	}
	cfg := server(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a request reached the server with a bad token")
	})
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			c := cfg
			c.TokenFile = filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(c.TokenFile, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			err := newClient(t, c).Get(context.Background(), "/p", podGVK, &corev1.Pod{})
			if err == nil || strings.Contains(err.Error(), content) {
				t.Fatalf("err = %v, want a token-file error that does not echo the token", err)
			}
		})
	}
}

func TestNew_ChecksConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no URL", Config{}, "URL: must be set"},
		{"http", Config{URL: "http://127.0.0.1:1"}, "https"},
		{"user info", Config{URL: "https://u:p@127.0.0.1", InsecureSkipVerify: true}, "user info"},
		{"no CA", Config{URL: "https://127.0.0.1"}, "CAFile"},
		{"CA without certificates", Config{URL: "https://127.0.0.1", CAFile: "/dev/null"}, "no PEM"},
		{"negative timeout", Config{URL: "https://127.0.0.1", InsecureSkipVerify: true, Timeout: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := New(Config{URL: "http://127.0.0.1:10255", AllowPlainHTTP: true}); err != nil {
		t.Errorf("plain HTTP when allowed: %v", err)
	}
}
