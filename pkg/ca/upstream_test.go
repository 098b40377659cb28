package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/nhid/nhid/pkg/svid"
)

// upstreamCA is a corporate PKI made in the test: a root and, optionally,
// an issuing CA below it that signs nhid's intermediates.
type upstreamCA struct {
	root     *x509.Certificate
	signer   *x509.Certificate // root itself, or the issuing CA
	key      crypto.Signer
	certFile string
	keyFile  string
}

type upstreamOpts struct {
	issuing  bool      // sign with an issuing CA under the root
	notAfter time.Time // of the signing certificate; default a year
	mutate   func(*x509.Certificate)
}

func newUpstream(t *testing.T, o upstreamOpts) *upstreamCA {
	t.Helper()
	rootKey := mustKey(t, svid.KeyTypeECP384)
	root := issueCA(t, "corp root", rootKey, nil, nil, testStart.Add(5*365*24*time.Hour), nil)
	u := &upstreamCA{root: root, signer: root, key: rootKey}
	notAfter := o.notAfter
	if notAfter.IsZero() {
		notAfter = testStart.Add(365 * 24 * time.Hour)
	}
	chain := []*x509.Certificate{root}
	if o.issuing {
		u.key = mustKey(t, svid.KeyTypeECP256)
		u.signer = issueCA(t, "corp issuing", u.key, root, rootKey, notAfter, o.mutate)
		chain = []*x509.Certificate{u.signer, root}
	} else if o.mutate != nil || !o.notAfter.IsZero() {
		u.signer = issueCA(t, "corp root", rootKey, nil, nil, notAfter, o.mutate)
		u.root = u.signer
		chain = []*x509.Certificate{u.signer}
	}
	dir := t.TempDir()
	u.certFile, u.keyFile = filepath.Join(dir, "upstream.crt"), filepath.Join(dir, "upstream.key")
	var pemCerts []byte
	for _, c := range chain {
		pemCerts = append(pemCerts, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	keyPEM, err := svid.EncodePrivateKeyPEM(u.key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, u.certFile, string(pemCerts))
	writeFile(t, u.keyFile, string(keyPEM))
	return u
}

// issueCA signs a CA certificate for key by parent (self-signed if nil).
func issueCA(t *testing.T, cn string, key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer, notAfter time.Time, mutate func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{Organization: []string{"Corp"}, CommonName: cn},
		NotBefore: testStart.Add(-24 * time.Hour), NotAfter: notAfter,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: -1,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if mutate != nil {
		mutate(tmpl)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func withUpstream(u *upstreamCA) func(*Config) {
	return func(cfg *Config) { cfg.UpstreamCertFile, cfg.UpstreamKeyFile = u.certFile, u.keyFile }
}

func TestUpstream_SVIDsChainToTheUpstreamRoot(t *testing.T) {
	for _, issuing := range []bool{false, true} {
		name := map[bool]string{false: "signed by the root", true: "signed by an issuing CA"}[issuing]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, testStart)
			u := newUpstream(t, upstreamOpts{issuing: issuing})
			c := e.start(t, withUpstream(u))

			if diff := cmp.Diff(ders([]*x509.Certificate{u.root}), ders(c.X509Authorities())); diff != "" {
				t.Fatalf("X509Authorities (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(ders([]*x509.Certificate{u.root}), bundleX509DERs(e.bundle(t))); diff != "" {
				t.Fatalf("bundle holds more than the upstream root (-want +got):\n%s", diff)
			}
			chain := signX509(t, c, time.Hour)
			wantLen := map[bool]int{false: 2, true: 3}[issuing]
			if len(chain) != wantLen || !chain[1].IsCA || chain[1].URIs[0].String() != "spiffe://example.org" {
				t.Fatalf("chain: %d certificates (want %d: leaf, nhid intermediate, upstream issuing CA)", len(chain), wantLen)
			}
			if issuing && !chain[2].Equal(u.signer) {
				t.Fatal("chain[2] is not the upstream issuing CA")
			}
			rootOnly := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{u.root})
			if err := verifyX509(chain, rootOnly, e.clock.Now()); err != nil {
				t.Fatalf("SVID does not verify against the upstream root alone: %v", err)
			}

			// Rotation replaces the intermediate; the bundle does not change.
			var early []*x509.Certificate
			for _, d := range []time.Duration{atHalf, beforeSwap, afterSwap} {
				e.clock.Set(testStart.Add(d))
				e.rotate(t, c)
				if diff := cmp.Diff(ders([]*x509.Certificate{u.root}), bundleX509DERs(e.bundle(t))); diff != "" {
					t.Fatalf("at +%s: bundle changed (-want +got):\n%s", d, diff)
				}
				if d == beforeSwap {
					early = signX509(t, c, 2*time.Hour)
				}
			}
			late := signX509(t, c, time.Hour)
			if late[1].Equal(early[1]) {
				t.Fatal("after rotation the SVID still chains through the old intermediate")
			}
			for name, ch := range map[string][]*x509.Certificate{"old": early, "new": late} {
				if err := verifyX509(ch, rootOnly, e.clock.Now()); err != nil {
					t.Errorf("after rotation: %s SVID does not verify: %v", name, err)
				}
			}

			e.clock.Add(time.Minute)
			restarted := e.start(t, withUpstream(u))
			if got := signX509(t, restarted, time.Hour); !got[1].Equal(late[1]) {
				t.Error("after a restart the CA chains through another intermediate")
			}
		})
	}
}

func TestUpstream_CALifeIsCappedByTheUpstream(t *testing.T) {
	e := newEnv(t, testStart)
	end := testStart.Add(6 * time.Hour)
	u := newUpstream(t, upstreamOpts{issuing: true, notAfter: end})
	c := e.start(t, withUpstream(u))
	chain := signX509(t, c, 48*time.Hour)
	if !chain[1].NotAfter.Equal(end) || !chain[0].NotAfter.Equal(end) {
		t.Fatalf("intermediate expires %s, leaf %s; want both capped at the upstream's %s", chain[1].NotAfter, chain[0].NotAfter, end)
	}
}

func TestUpstream_BadFilesAreReportedByField(t *testing.T) {
	good := newUpstream(t, upstreamOpts{})
	other := newUpstream(t, upstreamOpts{})
	issuing := newUpstream(t, upstreamOpts{issuing: true})
	dir := t.TempDir()
	path := func(name, content string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, content)
		return p
	}
	issuingOnly := path("issuing-only.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issuing.signer.Raw})))
	unreadable := path("unreadable.key", "x")
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	leafish := newUpstream(t, upstreamOpts{mutate: func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature }})
	pathLen0 := newUpstream(t, upstreamOpts{issuing: true, mutate: func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true }})
	expired := newUpstream(t, upstreamOpts{issuing: true, notAfter: testStart.Add(-time.Hour)})
	ending := newUpstream(t, upstreamOpts{issuing: true, notAfter: testStart.Add(5 * time.Minute)})
	tests := []struct {
		name       string
		cert, key  string
		wantErr    []string
		skipAsRoot bool
	}{
		{"missing cert file", filepath.Join(dir, "nope.crt"), good.keyFile, []string{"UpstreamCertFile", "no such file"}, false},
		{"missing key file", good.certFile, filepath.Join(dir, "nope.key"), []string{"UpstreamKeyFile", "no such file"}, false},
		{"unreadable key file", good.certFile, unreadable, []string{"UpstreamKeyFile", "permission denied"}, true},
		{"cert file without PEM", path("garbage.crt", "hello"), good.keyFile, []string{"UpstreamCertFile", "no PEM certificate found"}, false},
		{"key file without PEM", good.certFile, path("garbage.key", "hello"), []string{"UpstreamKeyFile", "no PEM private key block"}, false},
		{"key of another CA", good.certFile, other.keyFile, []string{"UpstreamKeyFile", "does not match the first certificate of UpstreamCertFile"}, false},
		{"not a CA", leafish.certFile, leafish.keyFile, []string{"UpstreamCertFile", "not a CA"}, false},
		{"path length 0", pathLen0.certFile, pathLen0.keyFile, []string{"UpstreamCertFile", "pathLenConstraint 0"}, false},
		{"expired", expired.certFile, expired.keyFile, []string{"UpstreamCertFile", "expired at"}, false},
		{"expiring within MinTTL", ending.certFile, ending.keyFile, []string{"UpstreamCertFile", "less than 10m0s from now"}, false},
		{"chain without its root", issuingOnly, issuing.keyFile, []string{"UpstreamCertFile", "no self-signed root"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skipAsRoot && os.Geteuid() == 0 {
				t.Skip("root reads files whatever their mode")
			}
			e := newEnv(t, testStart)
			cfg := e.config()
			cfg.UpstreamCertFile, cfg.UpstreamKeyFile = tt.cert, tt.key
			_, err := New(context.Background(), cfg)
			for _, want := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("New error = %v, want it to contain %q", err, want)
				}
			}
			if _, statErr := os.Stat(e.dir); statErr == nil {
				t.Error("a failed New created the CA directory")
			}
		})
	}
}

// TestUpstream_BrokenAtRotationHoldsOnlyTheX509CA: a broken upstream file
// stops the X.509 CA from rotating (with an error naming the file) but not
// the JWT key; once fixed, the next rotation step goes through.
func TestUpstream_BrokenAtRotationHoldsOnlyTheX509CA(t *testing.T) {
	e := newEnv(t, testStart)
	u := newUpstream(t, upstreamOpts{issuing: true})
	c := e.start(t, withUpstream(u))
	good, err := os.ReadFile(u.certFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, u.certFile, "truncated")

	e.clock.Set(testStart.Add(atHalf))
	err = c.Rotate(context.Background())
	if err == nil || !strings.Contains(err.Error(), "UpstreamCertFile") {
		t.Fatalf("Rotate error = %v, want one naming UpstreamCertFile", err)
	}
	if got := len(bundleKIDs(e.bundle(t))); got != 2 {
		t.Errorf("JWT keys in the bundle = %d, want 2: the JWT rotation must go on", got)
	}
	if got := keyFiles(t, e.dir, "x509"); got != 1 {
		t.Errorf("X.509 key files = %d, want 1 (no next CA without an upstream)", got)
	}

	writeFile(t, u.certFile, string(good))
	e.rotate(t, c)
	if got := keyFiles(t, e.dir, "x509"); got != 2 {
		t.Errorf("after the fix: X.509 key files = %d, want 2", got)
	}
}

// TestUpstream_RenewedOnDiskIsUsedAtTheNextRotation: the operator replaces
// the upstream files; the next CA is signed by the new upstream and its
// root is published next to the old one, which stays until it expires.
func TestUpstream_RenewedOnDiskIsUsedAtTheNextRotation(t *testing.T) {
	e := newEnv(t, testStart)
	oldUp := newUpstream(t, upstreamOpts{})
	c := e.start(t, withUpstream(oldUp))
	newUp := newUpstream(t, upstreamOpts{})
	for _, f := range [][2]string{{newUp.certFile, oldUp.certFile}, {newUp.keyFile, oldUp.keyFile}} {
		data, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, f[1], string(data))
	}

	e.clock.Set(testStart.Add(atHalf))
	e.rotate(t, c)
	want := ders([]*x509.Certificate{oldUp.root, newUp.root})
	if diff := cmp.Diff(want, bundleX509DERs(e.bundle(t))); diff != "" {
		t.Fatalf("bundle (-want +got):\n%s", diff)
	}
	e.clock.Set(testStart.Add(afterSwap))
	e.rotate(t, c)
	chain := signX509(t, c, time.Hour)
	if err := verifyX509(chain, x509bundle.FromX509Authorities(testTD, []*x509.Certificate{newUp.root}), e.clock.Now()); err != nil {
		t.Fatalf("after activation the SVID does not chain to the new upstream root: %v", err)
	}
}
