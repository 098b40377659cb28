package ca

import (
	"context"
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nhid/nhid/pkg/svid"
)

func TestNew_FirstStartCreatesPersistsAndPublishes(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)

	auth := c.X509Authorities()
	if len(auth) != 1 {
		t.Fatalf("X509Authorities: %d certificates, want 1", len(auth))
	}
	if got := auth[0].NotAfter.Sub(testStart); got != DefaultTTL {
		t.Errorf("CA lifetime from now = %s, want the default %s", got, DefaultTTL)
	}
	wantSubject := "SERIALNUMBER=" + auth[0].SerialNumber.Text(16) + ",CN=nhid CA,O=nhid"
	if got := auth[0].Subject.String(); got != wantSubject {
		t.Errorf("CA subject = %q, want %q", got, wantSubject)
	}
	b := e.bundle(t)
	if diff := cmp.Diff(ders(auth), bundleX509DERs(b)); diff != "" {
		t.Errorf("bundle X.509 authorities (-CA +bundle):\n%s", diff)
	}
	var kids []string
	for kid := range c.JWTAuthorities() {
		kids = append(kids, kid)
	}
	if diff := cmp.Diff(kids, bundleKIDs(b)); diff != "" || len(kids) != 1 {
		t.Errorf("bundle JWT key ids (-CA +bundle):\n%s", diff)
	}
	if err := verifyX509(signX509(t, c, time.Hour), e.x509Bundle(t), e.clock.Now()); err != nil {
		t.Errorf("SVID does not verify against the stored bundle: %v", err)
	}

	modes := map[string]os.FileMode{}
	entries, err := os.ReadDir(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range entries {
		fi, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		kind := de.Name()
		if strings.HasSuffix(kind, ".key") {
			kind = strings.SplitN(kind, "-", 2)[0] + " key"
		}
		modes[kind] = fi.Mode().Perm()
	}
	fi, err := os.Stat(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	modes["dir"] = fi.Mode().Perm()
	want := map[string]os.FileMode{"dir": 0o700, "state.json": 0o600, "x509 key": 0o600, "jwt key": 0o600}
	if diff := cmp.Diff(want, modes); diff != "" {
		t.Errorf("files in the CA directory and their modes (-want +got):\n%s", diff)
	}
}

func TestNew_RestartLoadsTheSameCA(t *testing.T) {
	e := newEnv(t, testStart)
	c1 := e.start(t)
	chain := signX509(t, c1, time.Hour)
	seq := e.bundle(t).GetSequenceNumber()

	e.clock.Add(time.Minute)
	c2 := e.start(t)
	if diff := cmp.Diff(ders(c1.X509Authorities()), ders(c2.X509Authorities())); diff != "" {
		t.Errorf("X.509 authorities changed across restart (-before +after):\n%s", diff)
	}
	j1, j2 := c1.JWTAuthorities(), c2.JWTAuthorities()
	if diff := cmp.Diff(sortedKeys(j1), sortedKeys(j2)); diff != "" {
		t.Errorf("JWT key ids changed across restart (-before +after):\n%s", diff)
	}
	for kid, pub := range j1 {
		if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(j2[kid]) {
			t.Errorf("JWT key %s changed across restart", kid)
		}
	}
	if err := verifyX509(chain, e.x509Bundle(t), e.clock.Now()); err != nil {
		t.Errorf("SVID issued before the restart no longer verifies: %v", err)
	}
	after := signX509(t, c2, time.Hour)
	if string(after[0].AuthorityKeyId) != string(chain[0].AuthorityKeyId) {
		t.Error("the restarted CA signs with a different key")
	}
	if got := e.bundle(t).GetSequenceNumber(); got != seq {
		t.Errorf("bundle sequence number moved from %d to %d on a restart that changed nothing", seq, got)
	}
}

func TestNew_CorruptStateIsAnErrorNotANewCA(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		wantErr string
	}{
		{"garbage state file", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, stateFileName), "{not json")
		}, "is unusable"},
		{"unknown version", func(t *testing.T, dir string) {
			editState(t, dir, func(s string) string { return strings.Replace(s, `"version": 1`, `"version": 7`, 1) })
		}, "version 7, want 1"},
		{"unknown field", func(t *testing.T, dir string) {
			editState(t, dir, func(s string) string { return strings.Replace(s, `"version": 1`, `"version": 1, "surprise": true`, 1) })
		}, `unknown field "surprise"`},
		{"missing key file", func(t *testing.T, dir string) {
			removeGlob(t, dir, "x509-*.key")
		}, "x509[0]: key file"},
		{"key file of another key", func(t *testing.T, dir string) {
			matches, _ := filepath.Glob(filepath.Join(dir, "jwt-*.key"))
			data, err := svid.EncodePrivateKeyPEM(mustKey(t, svid.KeyTypeECP256))
			if err != nil || len(matches) != 1 {
				t.Fatalf("replace JWT key: %v, %v", matches, err)
			}
			writeFile(t, matches[0], string(data))
		}, "does not hold the private key of this slot"},
		{"published authority missing", func(t *testing.T, dir string) {
			editStateJSON(t, dir, func(m map[string]any) { m["x509_authorities"] = []any{} })
		}, "x509[0]: CA certificate does not chain to a published authority"},
		{"two active CAs", func(t *testing.T, dir string) {
			editStateJSON(t, dir, func(m map[string]any) {
				x := m["x509"].([]any)
				m["x509"] = append(x, x[0])
			})
		}, "appears twice"},
		{"unknown status", func(t *testing.T, dir string) {
			editState(t, dir, func(s string) string { return strings.Replace(s, `"status": "active"`, `"status": "paused"`, 1) })
		}, `status "paused"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testStart)
			e.start(t)
			tt.corrupt(t, e.dir)
			before := snapshotDir(t, e.dir)

			cfg := e.config()
			cfg.Metrics = nil
			_, err := New(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "refusing to start a new CA") {
				t.Fatalf("New error = %v, want it to contain %q and refuse to start a new CA", err, tt.wantErr)
			}
			if diff := cmp.Diff(before, snapshotDir(t, e.dir)); diff != "" {
				t.Errorf("New changed the CA directory after failing (-before +after):\n%s", diff)
			}
		})
	}
}

// TestNew_LeftoversOfAnInterruptedWriteAreRemoved simulates a kill -9
// between writing a new key and the state naming it, and inside an
// atomic write.
func TestNew_LeftoversOfAnInterruptedWriteAreRemoved(t *testing.T) {
	e := newEnv(t, testStart)
	c1 := e.start(t)
	key, err := svid.EncodePrivateKeyPEM(mustKey(t, svid.KeyTypeECP256))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.dir, "x509-abc123.key"), string(key))
	writeFile(t, filepath.Join(e.dir, ".state.json.tmp-4242"), "{half")
	want := snapshotDir(t, e.dir)
	delete(want, "x509-abc123.key")
	delete(want, ".state.json.tmp-4242")

	c2 := e.start(t)
	if diff := cmp.Diff(ders(c1.X509Authorities()), ders(c2.X509Authorities())); diff != "" {
		t.Errorf("X.509 authorities changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(want, snapshotDir(t, e.dir)); diff != "" {
		t.Errorf("CA directory after restart (-want +got):\n%s", diff)
	}
}

func TestNew_ConfigErrorsNameTheField(t *testing.T) {
	e := newEnv(t, testStart)
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr []string
	}{
		{"no trust domain", func(c *Config) { c.TrustDomain = spiffeid.TrustDomain{} }, []string{"TrustDomain: required"}},
		{"no dir", func(c *Config) { c.Dir = "" }, []string{"Dir: required"}},
		{"no bundle store", func(c *Config) { c.Bundles = nil }, []string{"Bundles: required"}},
		{"bad key type", func(c *Config) { c.KeyType = "ec-p521" }, []string{"KeyType: key type \"ec-p521\": must be one of ec-p256, ec-p384, rsa-2048"}},
		{"bad JWT key type", func(c *Config) { c.JWTKeyType = "hs256" }, []string{"JWTKeyType: key type \"hs256\""}},
		{"two errors at once", func(c *Config) { c.KeyType = "x"; c.TTL = time.Minute }, []string{"KeyType:", "TTL: 1m0s is shorter than the minimum 10m0s"}},
		{"upstream key without cert", func(c *Config) { c.UpstreamKeyFile = "/k" }, []string{"UpstreamCertFile: required when UpstreamKeyFile is set"}},
		{"upstream cert without key", func(c *Config) { c.UpstreamCertFile = "/c" }, []string{"UpstreamKeyFile: required when UpstreamCertFile is set"}},
		{"dir is a file", func(c *Config) { c.Dir = filepath.Join(e.dir + "-file"); writeFile(t, c.Dir, "") }, []string{"Dir:", "not a directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config()
			cfg.Metrics = nil
			tt.mod(&cfg)
			_, err := New(context.Background(), cfg)
			for _, want := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("New error = %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestNew_SecondCAOnOneRegistryIsRefused(t *testing.T) {
	e := newEnv(t, testStart)
	cfg := e.config()
	if _, err := New(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Dir = filepath.Join(t.TempDir(), "other")
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "Metrics: CA metrics already registered") {
		t.Fatalf("New error = %v, want a Metrics registration error", err)
	}
}

func TestMetrics_CountSigningAndExposeExpiry(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	signX509(t, c, time.Hour)
	signX509(t, c, time.Hour)
	if _, _, _, err := c.SignJWTSVID(context.Background(), JWTParams{ID: testID, Audience: []string{"a"}, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{
		"x509 signed":      testutil.ToFloat64(c.metrics.x509Signed),
		"jwt signed":       testutil.ToFloat64(c.metrics.jwtSigned),
		"x509 prepared":    testutil.ToFloat64(c.metrics.rotations.WithLabelValues(kindX509, stepPrepare)),
		"jwt activated":    testutil.ToFloat64(c.metrics.rotations.WithLabelValues(kindJWT, stepActivate)),
		"x509 expiry unix": testutil.ToFloat64(c.metrics.expiry.WithLabelValues(kindX509)),
	}
	want := map[string]float64{
		"x509 signed": 2, "jwt signed": 1, "x509 prepared": 1, "jwt activated": 1,
		"x509 expiry unix": float64(c.X509Authorities()[0].NotAfter.Unix()),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	n, err := testutil.GatherAndCount(e.reg, "nhid_ca_svids_signed_total", "nhid_ca_rotations_total", "nhid_ca_active_expiry_timestamp_seconds")
	if err != nil || n == 0 {
		t.Errorf("registered nhid_ca_* series: %d, %v", n, err)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func editState(t *testing.T, dir string, fn func(string) string) {
	t.Helper()
	path := filepath.Join(dir, stateFileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := fn(string(data))
	if edited == string(data) {
		t.Fatal("state edit changed nothing")
	}
	writeFile(t, path, edited)
}

func editStateJSON(t *testing.T, dir string, fn func(map[string]any)) {
	t.Helper()
	editState(t, dir, func(s string) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		fn(m)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	})
}

func removeGlob(t *testing.T, dir, pattern string) {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(matches) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotDir maps file names to contents.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range entries {
		data, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[de.Name()] = string(data)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
