package awsiid

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nhid/nhid/attestors/awsiid/awsiidtest"
	"github.com/nhid/nhid/pkg/attestor/attestortest"
)

func TestEvidence_ReadsTheDocumentFromIMDSv2AndAttests(t *testing.T) {
	f := newFixture(t)
	ev, imds := f.imdsEvidence(t, f.doc)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	res, err := attestortest.Drive(ctx, f.v, ev)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	if !strings.HasSuffix(res.AgentID.String(), "/aws_iid/123456789012/us-east-1/i-0123456789abcdef0") {
		t.Errorf("AgentID = %s", res.AgentID)
	}
	if got := imds.Served(); got != 2 {
		t.Errorf("IMDS served %d documents and signatures, want 2", got)
	}
	if !ev.CanReattest() {
		t.Error("CanReattest = false, want true")
	}
	if _, err := ev.Respond(ctx, []byte("challenge")); err == nil {
		t.Error("Respond answered a challenge the attestor never sends")
	}
}

// The fake speaks IMDSv2 as EC2 does with tokens required, so the tests
// above prove the agent does too.
func TestIMDS_RequiresASessionToken(t *testing.T) {
	imds := awsiidtest.StartIMDS(t, []byte(`{}`), "AA==")
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, imds.URL()+documentPath, nil)
		if token != "" {
			req.Header.Set(TokenHeader, token)
		}
		return status(t, req)
	}
	if code := get(""); code != http.StatusUnauthorized {
		t.Errorf("GET without a token: %d, want 401", code)
	}
	if code := get("made-up"); code != http.StatusUnauthorized {
		t.Errorf("GET with an unknown token: %d, want 401", code)
	}
	put, _ := http.NewRequest(http.MethodPut, imds.URL()+tokenPath, nil)
	if code := status(t, put); code != http.StatusBadRequest {
		t.Errorf("PUT without a TTL: %d, want 400", code)
	}
	put.Header.Set(TokenTTLHeader, "60")
	resp, err := plainClient.Do(put)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if code := get(string(token)); code != http.StatusOK {
		t.Errorf("GET with the session token: %d, want 200", code)
	}
}

func status(t *testing.T, req *http.Request) int {
	t.Helper()
	resp, err := plainClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// plainClient keeps no idle connections, which would outlive the test.
var plainClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func TestEvidence_ExplainsWhyIMDSGaveNoDocument(t *testing.T) {
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr
	}()
	answer := func(code int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	hang := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	t.Cleanup(func() { close(hang); silent.Close() })
	noDoc := awsiidtest.StartIMDS(t, nil, "")

	tests := []struct {
		name, endpoint string
		timeout        time.Duration
		want           string
	}{
		{"nothing listening", closed, 0, "not on EC2 or IMDS unreachable at " + closed},
		{"no answer", silent.URL, 200 * time.Millisecond, "no answer from IMDS at " + silent.URL + " within 200ms"},
		{"IMDSv1 only", answer(http.StatusMethodNotAllowed), 0, "does not speak IMDSv2"},
		{"IMDS disabled", answer(http.StatusForbidden), 0, "is the metadata service disabled"},
		{"no document", noDoc.URL(), 0, "404 Not Found (no instance identity document here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := NewEvidence(EvidenceConfig{MetadataEndpoint: tt.endpoint, Timeout: tt.timeout})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			_, err = ev.Evidence(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "aws_iid evidence: ") {
				t.Errorf("err = %v, want one saying %q", err, tt.want)
			}
		})
	}
}

func TestEvidence_RefusesWhatIMDSShouldNotServe(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, doc, sig, want string
	}{
		{"document not JSON", "<html>captive portal</html>", f.signer.Sign([]byte("x")), "not JSON"},
		{"signature not base64", "{}", "%%%", "not base64"},
		{"document too long", "{" + strings.Repeat(" ", maxDocument) + "}", "AA==", "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			imds := awsiidtest.StartIMDS(t, []byte(tt.doc), tt.sig)
			ev, err := NewEvidence(EvidenceConfig{MetadataEndpoint: imds.URL() + "/"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ev.Evidence(context.Background()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one saying %q", err, tt.want)
			}
		})
	}
}

func TestNewEvidence_ChecksItsConfig(t *testing.T) {
	ev, err := NewEvidence(EvidenceConfig{})
	if err != nil || ev.endpoint != DefaultMetadataEndpoint || ev.timeout != DefaultTimeout {
		t.Errorf("NewEvidence(zero) = %+v, %v; want the EC2 endpoint and default timeout", ev, err)
	}
	for _, tt := range []struct {
		cfg  EvidenceConfig
		want string
	}{
		{EvidenceConfig{MetadataEndpoint: "169.254.169.254"}, "must be an http:// or https:// URL"},
		{EvidenceConfig{MetadataEndpoint: "ftp://imds"}, "must be an http:// or https:// URL"},
		{EvidenceConfig{MetadataEndpoint: "http://user:pw@imds"}, "must not hold credentials"},
		{EvidenceConfig{MetadataEndpoint: "http://imds/?x=1"}, "must not hold credentials, a query"},
		{EvidenceConfig{Timeout: -time.Second}, "Timeout: -1s is negative"},
	} {
		if _, err := NewEvidence(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewEvidence(%+v) err = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

func TestParseCertificates(t *testing.T) {
	a, b := awsiidtest.NewSigner(t), awsiidtest.NewSigner(t)
	certs, err := ParseCertificates([]byte("us-east-1:\n" + string(a.PEM) + "\neu-west-1:\n" + string(b.PEM)))
	if err != nil || len(certs) != 2 || !certs[0].Equal(a.Cert) || !certs[1].Equal(b.Cert) {
		t.Fatalf("ParseCertificates = %d certificates, %v; want both", len(certs), err)
	}
	for _, tt := range []struct {
		name, data, want string
	}{
		{"empty", "", "no PEM CERTIFICATE block"},
		{"a key", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}})), `PEM block 1 is a "PUBLIC KEY"`},
		{"not DER", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})), "certificate 1:"},
		{"not RSA", string(a.PEM) + ecCertPEM(t), `certificate 2 (CN=not rsa): key is *ecdsa.PublicKey, want RSA`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseCertificates([]byte(tt.data)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func ecCertPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not rsa"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
