package tpmtest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/nhid/nhid/attestors/tpm/tpmconn"
)

// waitTimeout bounds waiting for swtpm to start and stop.
const waitTimeout = 10 * time.Second

// TPM is a running swtpm.
type TPM struct {
	// Addr is the TCP command channel, HOST:PORT.
	Addr string
	// StateDir holds the TPM's persistent state.
	StateDir string
	logPath  string
	cmd      *exec.Cmd
	done     chan struct{}
}

// Start manufactures a TPM 2.0 with swtpm_setup (RSA and ECC EKs, SHA-256
// PCR bank) and runs it with swtpm. With a CA, the EKs get certificates
// from it in the standard NV indices; with ca nil they get none. The TPM
// is stopped at cleanup.
func Start(t testing.TB, ca *CA) *TPM {
	t.Helper()
	Require(t)
	dir := tempDir(t, "nhid-swtpm-")
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	manufacture(t, dir, state, ca)
	// Another process may take the free port before swtpm binds it; swtpm
	// then exits at once and another port is tried.
	var lastErr error
	for range 5 {
		tp, err := run(t, dir, state, freePort(t))
		if err == nil {
			return tp
		}
		lastErr = err
	}
	t.Fatalf("start swtpm: %v", lastErr)
	return nil
}

func manufacture(t testing.TB, dir, state string, ca *CA) {
	t.Helper()
	args := []string{"--tpm2", "--tpmstate", state, "--createek", "--pcr-banks", "sha256",
		"--logfile", filepath.Join(dir, "swtpm_setup.log")}
	if ca != nil {
		args = append(args, "--create-ek-cert", "--config", ca.writeSetupConfig(t, dir))
	} else {
		// swtpm_setup reads /etc/swtpm_setup.conf unless told otherwise;
		// an empty config keeps the host's out of the test.
		empty := filepath.Join(dir, "swtpm_setup.conf")
		writeFile(t, empty, "active_pcr_banks = sha256\n")
		args = append(args, "--config", empty)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, lookPath(t, "swtpm_setup"), args...).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "swtpm_setup.log"))
		t.Fatalf("swtpm_setup %s: %v\n%s\n%s", strings.Join(args, " "), err, out, log)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// run starts swtpm on port and waits until it accepts connections.
func run(t testing.TB, dir, state string, port int) (*TPM, error) {
	t.Helper()
	tp := &TPM{
		Addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		StateDir: state,
		logPath:  filepath.Join(dir, "swtpm.log"),
		done:     make(chan struct{}),
	}
	tp.cmd = exec.Command(lookPath(t, "swtpm"), "socket", "--tpm2",
		"--tpmstate", "dir="+state,
		"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port),
		"--flags", "not-need-init,startup-clear",
		"--log", "file="+tp.logPath+",level=1")
	tp.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := tp.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start swtpm: %w", err)
	}
	go func() { _ = tp.cmd.Wait(); close(tp.done) }()
	if err := tp.waitListening(); err != nil {
		tp.stop()
		return nil, err
	}
	t.Cleanup(tp.stop)
	return tp, nil
}

func (tp *TPM) waitListening() error {
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-tp.done:
			return fmt.Errorf("swtpm exited at start: %s", tp.log())
		default:
		}
		conn, err := net.DialTimeout("tcp", tp.Addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("swtpm did not listen on %s within %s: %s", tp.Addr, waitTimeout, tp.log())
}

func (tp *TPM) log() string {
	b, _ := os.ReadFile(tp.logPath)
	return strings.TrimSpace(string(b))
}

// stop ends swtpm with SIGTERM, then SIGKILL.
func (tp *TPM) stop() {
	select {
	case <-tp.done:
		return
	default:
	}
	_ = tp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-tp.done:
	case <-time.After(waitTimeout):
		_ = tp.cmd.Process.Kill()
		<-tp.done
	}
}

// Open connects to the TPM; close the connection when done, since swtpm
// serves one connection at a time.
func (tp *TPM) Open(t testing.TB) transport.TPMCloser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	conn, err := tpmconn.DialSWTPM(ctx, tp.Addr)
	if err != nil {
		t.Fatalf("open swtpm: %v", err)
	}
	return conn
}

// ExtendPCR extends the SHA-256 bank of PCR index with SHA-256(data), as
// a boot component measured after enrolment would.
func (tp *TPM) ExtendPCR(t testing.TB, index int, data []byte) {
	t.Helper()
	conn := tp.Open(t)
	defer conn.Close()
	sum := sha256.Sum256(data)
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(index), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256, Digest: sum[:],
		}}},
	}.Execute(conn)
	if err != nil {
		t.Fatalf("extend PCR %d: %v", index, err)
	}
}

// PCR reads the SHA-256 bank of PCR index.
func (tp *TPM) PCR(t testing.TB, index int) []byte {
	t.Helper()
	conn := tp.Open(t)
	defer conn.Close()
	resp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(uint(index)),
	}}}}.Execute(conn)
	if err != nil {
		t.Fatalf("read PCR %d: %v", index, err)
	}
	if len(resp.PCRValues.Digests) != 1 {
		t.Fatalf("read PCR %d: got %d values", index, len(resp.PCRValues.Digests))
	}
	return resp.PCRValues.Digests[0].Buffer
}
