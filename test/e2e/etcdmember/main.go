// Command etcdmember runs one member of an etcd cluster: etcd's own server
// code (go.etcd.io/etcd/server/v3/embed, the version nhid's go.mod pins)
// as a process of its own, so that the end-to-end tests can kill -9 a
// member and restart it on its data, as with a real deployment.
//
//	etcdmember --name m0 --data-dir DIR --client-url http://127.0.0.1:P \
//	    --peer-url http://127.0.0.1:Q --initial-cluster m0=http://...,m1=...
//
// It prints "ready" once the member serves, and stops on SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nhid/nhid/pkg/store/etcd/etcdtest"
)

func main() {
	var mc etcdtest.MemberConfig
	flag.StringVar(&mc.Name, "name", "", "member name, unique in the cluster")
	flag.StringVar(&mc.Dir, "data-dir", "", "member data directory")
	flag.StringVar(&mc.ClientURL, "client-url", "", "client URL to listen on")
	flag.StringVar(&mc.PeerURL, "peer-url", "", "peer URL to listen on")
	flag.StringVar(&mc.InitialCluster, "initial-cluster", "", "every member as name=peer-url, comma-separated")
	flag.StringVar(&mc.LogLevel, "log-level", "warn", "etcd log level")
	flag.Parse()
	if mc.Name == "" || mc.Dir == "" || mc.ClientURL == "" || mc.PeerURL == "" {
		fmt.Fprintln(os.Stderr, "etcdmember: --name, --data-dir, --client-url and --peer-url are required")
		os.Exit(2)
	}
	// The member is meant to be killed: it must fsync like production so
	// that what it acknowledged survives.
	m, err := etcdtest.StartMember(mc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdmember:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
	case err := <-m.Err():
		fmt.Fprintln(os.Stderr, "etcdmember:", err)
		m.Stop()
		os.Exit(1)
	}
	m.Stop()
}
