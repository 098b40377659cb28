package peercred

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"

	"go.uber.org/goleak"
)

// The test binary doubles as the peer process the tests need: with
// helperEnv set it runs one helper mode instead of the tests.
const (
	helperEnv       = "NHID_PEERCRED_TEST_HELPER"
	helperSocketEnv = "NHID_PEERCRED_TEST_SOCKET"
)

const (
	// helperConnectAndHold connects, waits for the server's ack, then holds
	// the connection until stdin closes.
	helperConnectAndHold = "connect-hold"
	// helperConnectAndExit connects, waits for the ack, and exits.
	helperConnectAndExit = "connect-exit"
	// helperConnectNoAck connects and exits without waiting to be accepted.
	helperConnectNoAck = "connect-noack"
	// helperWait does nothing until stdin closes.
	helperWait = "wait"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Getenv(helperSocketEnv)))
	}
	goleak.VerifyTestMain(m)
}

func runHelper(mode, socket string) int {
	if mode == helperWait {
		_, _ = io.Copy(io.Discard, os.Stdin)
		return 0
	}
	c, err := net.Dial("unix", socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper dial:", err)
		return 2
	}
	defer c.Close()
	if mode == helperConnectNoAck {
		return 0
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		fmt.Fprintln(os.Stderr, "helper ack:", err)
		return 3
	}
	if mode == helperConnectAndHold {
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	return 0
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin *os.File // closing it lets a holding helper exit
}

// startHelper runs the test binary in the given helper mode. The process is
// killed and reaped at cleanup if the test has not waited for it.
func startHelper(t *testing.T, mode, socket string) *helper {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("test executable: %v", err)
	}
	// An *os.File stdin keeps exec from starting a copying goroutine, and
	// closing our end is how the helper is told to exit.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("pipe: %v", err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperSocketEnv+"="+socket)
	cmd.Stdin = r
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", mode, err)
	}
	_ = r.Close()
	h := &helper{cmd: cmd, stdin: w}
	t.Cleanup(func() {
		_ = w.Close()
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return h
}

// finish lets the helper exit and reaps it.
func (h *helper) finish(t *testing.T) {
	t.Helper()
	_ = h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("helper exited with %v", err)
	}
}
