package bolt_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/store/bolt"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// crashWriterEnv names the store file the writer process writes to.
const crashWriterEnv = "NHID_BOLT_CRASH_WRITER_PATH"

// TestCrashWriterProcess is the child of TestCrash_AcknowledgedWritesSurviveKill9:
// it writes batches forever and acknowledges each committed one on stdout.
func TestCrashWriterProcess(t *testing.T) {
	path := os.Getenv(crashWriterEnv)
	if path == "" {
		t.Skip("runs only as the child of TestCrash_AcknowledgedWritesSurviveKill9")
	}
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for n := 0; ; n++ {
		batch := make([]*typesv1.Entry, 10)
		for i := range batch {
			batch[i] = &typesv1.Entry{
				Id:       fmt.Sprintf("e-%d-%d", n, i),
				SpiffeId: fmt.Sprintf("spiffe://example.org/w/%d/%d", n, i),
				ParentId: "spiffe://example.org/agent",
			}
		}
		created, _, err := s.CreateEntries(t.Context(), batch)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Printf("ack %d %d\n", n, created[len(created)-1].Revision)
	}
}

func TestCrash_AcknowledgedWritesSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := filepath.Join(t.TempDir(), "nhid.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWriterProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashWriterEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("StdoutPipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start writer: %v", err)
	}
	acks := readAcks(out)
	select {
	case <-acks.reached(50):
	case <-acks.done:
		t.Fatalf("writer stopped early: %v", acks.last().err)
	case <-time.After(60 * time.Second):
		t.Fatal("writer acknowledged fewer than 50 batches in 60s")
	}
	// The reader keeps draining stdout, so the kill lands while the writer
	// is busy committing, not while it is blocked on a full pipe.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9 writer: %v", err)
	}
	_ = cmd.Wait()
	<-acks.done
	last := acks.last()
	if last.err != nil {
		t.Fatal(last.err)
	}
	lastBatch, lastRev := last.batch, last.rev

	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	rev, err := s.Revision(t.Context())
	if err != nil || rev < lastRev {
		t.Fatalf("Revision after kill -9 = %d, %v; the writer was told %d was committed", rev, err, lastRev)
	}
	for n := 0; n <= lastBatch; n++ {
		for i := range 10 {
			if _, err := s.GetEntry(t.Context(), fmt.Sprintf("e-%d-%d", n, i)); err != nil {
				t.Fatalf("acknowledged entry e-%d-%d lost: %v", n, i, err)
			}
		}
	}
	count, err := s.CountEntries(t.Context())
	if err != nil || count%10 != 0 {
		t.Errorf("CountEntries = %d, %v; want whole batches only", count, err)
	}
}

// ack is the writer's last acknowledgement: batch and revision committed.
type ack struct {
	batch int
	rev   int64
	err   error
}

// ackReader follows the writer's stdout to its end.
type ackReader struct {
	mu      sync.Mutex
	latest  ack
	waiters map[int]chan struct{}
	done    chan struct{}
}

// readAcks starts reading acknowledgements from out.
func readAcks(out io.Reader) *ackReader {
	r := &ackReader{latest: ack{batch: -1}, waiters: map[int]chan struct{}{}, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.record(parseAck(sc.Text()))
		}
	}()
	return r
}

func parseAck(line string) ack {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ack" {
		return ack{err: fmt.Errorf("writer said %q", line)}
	}
	b, err1 := strconv.Atoi(f[1])
	r, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return ack{err: fmt.Errorf("malformed ack %q", line)}
	}
	return ack{batch: b, rev: r}
}

func (r *ackReader) record(a ack) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.latest.err != nil {
		return
	}
	r.latest = a
	for n, ch := range r.waiters {
		if a.err == nil && a.batch >= n {
			close(ch)
			delete(r.waiters, n)
		}
	}
}

// reached is closed once batch n has been acknowledged.
func (r *ackReader) reached(n int) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	if r.latest.err == nil && r.latest.batch >= n {
		close(ch)
	} else {
		r.waiters[n] = ch
	}
	return ch
}

func (r *ackReader) last() ack {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latest
}
