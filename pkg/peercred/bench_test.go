package peercred

import (
	"net"
	"testing"
)

// BenchmarkAccept measures one connect, accept with identification and
// pinning, and close: the per-connection overhead peercred adds.
func BenchmarkAccept(b *testing.B) {
	for _, mode := range pinModes {
		b.Run(mode.name, func(b *testing.B) {
			path := socketPathB(b)
			l, err := ListenConfig{noPeerPidfd: mode.noPeerPidfd}.Listen(path)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ReportAllocs()
			for b.Loop() {
				client, err := net.Dial("unix", path)
				if err != nil {
					b.Fatal(err)
				}
				server, err := l.Accept()
				if err != nil {
					b.Fatal(err)
				}
				_ = client.Close()
				_ = server.Close()
			}
		})
	}
}

// BenchmarkIsAlive measures the check made after every attestation.
func BenchmarkIsAlive(b *testing.B) {
	path := socketPathB(b)
	l, err := Listen(path)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	p, _ := ProcessOf(server)
	b.ReportAllocs()
	for b.Loop() {
		if err := p.IsAlive(); err != nil {
			b.Fatal(err)
		}
	}
}
