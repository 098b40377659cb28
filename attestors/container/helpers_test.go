package container

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// testTmp outlives every test: binaries built once are kept there.
var testTmp string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nhid-container-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testTmp = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// containerd's dialer polls for a missing socket until its
		// timeout, whatever the gRPC connection's state.
		if err := goleak.Find(
			goleak.IgnoreTopFunction("github.com/containerd/containerd/v2/pkg/dialer.timeoutDialer"),
			goleak.IgnoreTopFunction("github.com/containerd/containerd/v2/pkg/dialer.timeoutDialer.func1"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func osGetpid() int { return os.Getpid() }
