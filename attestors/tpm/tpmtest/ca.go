// Package tpmtest runs software TPMs for tests: swtpm in socket mode on a
// temporary state directory and a free loopback port, manufactured by
// swtpm_setup with real EK certificates issued by a CA the test creates
// (swtpm_localca signing with the test's key). Tests talk to it with real
// TPM 2.0 commands through go-tpm.
//
// Tests that need swtpm call Require first: outside CI a missing swtpm
// skips the test with the reason; in CI (CI=true) it fails the test, so
// nothing is skipped there for want of it.
package tpmtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// CA is an EK certificate authority of a test: swtpm_localca signs the EK
// certificates of the TPMs started with it.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// CertFile is Cert in PEM, the file a verifier is configured with.
	CertFile string
	// dir is swtpm_localca's state directory: key, certificate, serial.
	dir string
}

// NewCA creates a self-signed ECDSA P-256 EK CA named commonName in a
// temporary directory.
func NewCA(t testing.TB, commonName string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("EK CA key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"nhid tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("EK CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := tempDir(t, "nhid-ekca-")
	ca := &CA{Cert: cert, CertFile: filepath.Join(dir, "issuercert.pem"), dir: dir}
	writePEM(t, ca.CertFile, "CERTIFICATE", der, 0o644)
	writePEM(t, filepath.Join(dir, "signkey.pem"), "PRIVATE KEY", keyDER, 0o600)
	return ca
}

// writeSetupConfig writes the swtpm_setup and swtpm_localca configuration
// that has swtpm_setup issue EK certificates with this CA, into dir, and
// returns the swtpm_setup config's path.
func (ca *CA) writeSetupConfig(t testing.TB, dir string) string {
	t.Helper()
	localca := filepath.Join(dir, "swtpm-localca.conf")
	writeFile(t, localca, "statedir = "+ca.dir+"\n"+
		"signingkey = "+filepath.Join(ca.dir, "signkey.pem")+"\n"+
		"issuercert = "+ca.CertFile+"\n"+
		"certserial = "+filepath.Join(ca.dir, "certserial")+"\n")
	options := filepath.Join(dir, "swtpm-localca.options")
	writeFile(t, options, "--tpm-manufacturer id:00001014\n--tpm-model swtpm\n--tpm-version id:20191023\n")
	setup := filepath.Join(dir, "swtpm_setup.conf")
	writeFile(t, setup, "create_certs_tool = "+lookPath(t, "swtpm_localca")+"\n"+
		"create_certs_tool_config = "+localca+"\n"+
		"create_certs_tool_options = "+options+"\n"+
		"active_pcr_banks = sha256\n")
	return setup
}

func writePEM(t testing.TB, path, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tempDir is a fresh directory with a short path, removed at cleanup.
func tempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Require makes sure swtpm, swtpm_setup and swtpm_localca are installed.
// Without them the test is skipped with the reason, unless the CI
// environment variable is set, in which case it fails: CI installs them
// (.ci/run), so their absence there is a broken environment.
func Require(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := tool + " not found: install Debian's swtpm and swtpm-tools (apt-get install swtpm swtpm-tools)"
			if os.Getenv("CI") != "" {
				t.Fatalf("%s; CI must run the TPM tests", msg)
			}
			t.Skip(msg)
		}
	}
}

func lookPath(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		Require(t)
		t.Fatalf("%s: %v", tool, err)
	}
	return p
}
