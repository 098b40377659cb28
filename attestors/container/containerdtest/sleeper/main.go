// Command sleeper is the process the container tests run in a container:
// it does nothing until it is signalled, so its pid stays valid for as long
// as a test needs it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}
