package workloadapi

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A workload's first request on a new connection must be answered without
// the server first making it acknowledge a ping (gRPC's bandwidth probe):
// a round of frames and wake-ups at every workload's start.
func TestServerOptions_FirstRequestIsAnsweredWithoutPing(t *testing.T) {
	ca := newTestCA(t, "example.org")
	mgr := newTestManager(t, ca)
	mgr.setIdentities(mgr.identity("e1", "spiffe://example.org/web", "", selfSelector()))
	ts := startServer(t, serverOptions{manager: mgr, attestor: &uidAttestor{}})

	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hdr bytes.Buffer
	enc := hpack.NewEncoder(&hdr)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", "localhost"},
		{":path", "/SpiffeWorkloadAPI/FetchX509SVID"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
		{securityHeaderKey, securityHeaderValue},
	} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	// An empty X509SVIDRequest: uncompressed, zero length.
	if err := fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}

	var seen []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's frames (seen %v): %v", seen, err)
		}
		seen = append(seen, f.Header().Type.String())
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				t.Errorf("server pinged before answering (frames: %v)", seen)
			}
		case *http2.DataFrame:
			if f.StreamID == 1 && len(f.Data()) > 5 {
				return // the X509SVIDResponse
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("request failed (frames: %v)", seen)
		}
	}
}
