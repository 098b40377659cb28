package awsiidtest

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// IMDS is an instance metadata service speaking IMDSv2 as EC2 does with
// tokens required: PUT /latest/api/token with a TTL header of 1 to 21600
// seconds returns a session token; GETs without a valid token get 401.
// It serves the instance identity document and its signature.
type IMDS struct {
	srv *httptest.Server

	mu     sync.Mutex
	doc    []byte
	sig    string
	tokens map[string]time.Time // token → expiry
	gets   int                  // GETs answered 200
}

// StartIMDS serves doc and sig (the base64 text of /signature) until the
// test ends.
func StartIMDS(t testing.TB, doc []byte, sig string) *IMDS {
	t.Helper()
	m := &IMDS{doc: doc, sig: sig, tokens: map[string]time.Time{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

// URL is the service's base URL, the agent's metadata endpoint.
func (m *IMDS) URL() string { return m.srv.URL }

// Set replaces the document and signature served.
func (m *IMDS) Set(doc []byte, sig string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.doc, m.sig = doc, sig
}

// Served counts the document and signature GETs answered with 200.
func (m *IMDS) Served() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gets
}

func (m *IMDS) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	switch {
	case r.URL.Path == "/latest/api/token" && r.Method == http.MethodPut:
		m.issueToken(w, r)
	case r.URL.Path == "/latest/api/token":
		http.Error(w, "", http.StatusMethodNotAllowed)
	case r.Method != http.MethodGet:
		http.Error(w, "", http.StatusMethodNotAllowed)
	case !m.validToken(r.Header.Get("X-aws-ec2-metadata-token")):
		http.Error(w, "", http.StatusUnauthorized)
	default:
		m.serveData(w, r.URL.Path)
	}
}

func (m *IMDS) issueToken(w http.ResponseWriter, r *http.Request) {
	// EC2 refuses token requests that went through a proxy.
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "", http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
	if err != nil || ttl < 1 || ttl > 21600 {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	raw := make([]byte, 42)
	if _, err := rand.Read(raw); err != nil {
		http.Error(w, "", http.StatusInternalServerError)
		return
	}
	token := base64.StdEncoding.EncodeToString(raw)
	m.mu.Lock()
	m.tokens[token] = time.Now().Add(time.Duration(ttl) * time.Second)
	m.mu.Unlock()
	w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
	_, _ = w.Write([]byte(token))
}

func (m *IMDS) validToken(token string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.tokens[token]
	return ok && time.Now().Before(exp)
}

func (m *IMDS) serveData(w http.ResponseWriter, path string) {
	m.mu.Lock()
	var body []byte
	switch path {
	case "/latest/dynamic/instance-identity/document":
		body = m.doc
	case "/latest/dynamic/instance-identity/signature":
		body = []byte(m.sig)
	}
	if body != nil {
		m.gets++
	}
	m.mu.Unlock()
	if body == nil {
		http.Error(w, "", http.StatusNotFound)
		return
	}
	_, _ = w.Write(body)
}
