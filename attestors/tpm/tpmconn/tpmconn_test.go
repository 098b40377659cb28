package tpmconn

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// response builds a TPM response of n bytes in all, header included.
func response(n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b, 0x8001)
	binary.BigEndian.PutUint32(b[2:], uint32(n))
	for i := 10; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

// fakeSWTPM answers each command on the first connection with answer(cmd),
// written in pieces of at most chunk bytes, as TCP may deliver it.
func fakeSWTPM(t *testing.T, chunk int, answer func(cmd []byte) []byte) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = lis.Close(); <-done })
	go func() {
		defer close(done)
		conn, err := lis.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			out := answer(buf[:n])
			for len(out) > 0 {
				k := min(chunk, len(out))
				if _, err := conn.Write(out[:k]); err != nil {
					return
				}
				out = out[k:]
				time.Sleep(time.Millisecond)
			}
		}
	}()
	return lis.Addr().String()
}

func TestDialSWTPM_ReassemblesResponsesSplitAcrossReads(t *testing.T) {
	want := response(1500)
	addr := fakeSWTPM(t, 100, func([]byte) []byte { return want })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tpm, err := DialSWTPM(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	got, err := tpm.Send([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7b})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got %d bytes, want the %d-byte response", len(got), len(want))
	}
}

func TestDialSWTPM_RefusesBadResponseSizes(t *testing.T) {
	tests := []struct {
		name string
		resp []byte
		want string
	}{
		{"larger than a TPM response", append(binary.BigEndian.AppendUint32([]byte{0x80, 0x01}, 1<<20), 0, 0, 0, 0), "announces 1048576 bytes"},
		{"shorter than its header", append(binary.BigEndian.AppendUint32([]byte{0x80, 0x01}, 4), 0, 0, 0, 0), "announces 4 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fakeSWTPM(t, 4096, func([]byte) []byte { return tt.resp })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tpm, err := DialSWTPM(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer tpm.Close()
			_, err = tpm.Send([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7b})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Send err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestDialSWTPM_CancellationCutsAWedgedTPM(t *testing.T) {
	addr := fakeSWTPM(t, 4096, func([]byte) []byte {
		time.Sleep(2 * time.Second) // never answers in time
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	tpm, err := DialSWTPM(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = tpm2.GetRandom{BytesRequested: 8}.Execute(tpm)
	if err == nil {
		t.Fatal("a command to a wedged TPM succeeded after cancellation")
	}
}

func TestOpenDevice_RefusesWhatIsNotADevice(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tpm0")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDevice(file); err == nil || !strings.Contains(err.Error(), "not a character device") {
		t.Errorf("OpenDevice(regular file) err = %v, want it refused", err)
	}
	_, err := OpenDevice(filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenDevice(missing) err = %v, want ErrNotExist", err)
	}
}

var _ io.ReadWriteCloser = (*framedConn)(nil)
