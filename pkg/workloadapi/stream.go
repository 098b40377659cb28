package workloadapi

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// follow serves one stream for an attested caller: it subscribes to the
// caller's selectors and sends the message build makes of every Update,
// unless it equals the last one sent (an Update may change nothing this
// stream carries, such as a JWT key on an X.509 stream). It returns when
// the client goes away, when build refuses (the caller lost its last
// identity) or when the subscription ends. The subscription is closed on
// every path.
//
// It runs on the gRPC stream's own goroutine and starts none: an open stream
// costs a subscription and the last message sent, nothing more.
func follow[M proto.Message](c *call, build func(*Update) (M, error), send func(M) error) error {
	sub := c.h.manager.Subscribe(c.sels)
	defer sub.Close()

	var last M
	sentAny := false
	for {
		select {
		case <-c.ctx.Done():
			return c.ctx.Err()
		case u, ok := <-sub.Updates():
			if !ok {
				return &StatusError{Code: codes.Unavailable, Msg: "identity updates ended; reconnect"}
			}
			msg, err := build(u)
			if err != nil {
				return err
			}
			if sentAny && proto.Equal(last, msg) {
				continue
			}
			// The connection may have outlived the process that was
			// attested (a child that inherited the socket); it gets
			// nothing more.
			if err := c.proc.IsAlive(); err != nil {
				return &CallerError{PID: c.proc.PID(), Err: err}
			}
			if err := send(msg); err != nil {
				return err
			}
			c.sent()
			last, sentAny = msg, true
		}
	}
}

// onceLog logs a recurring condition of a stream once, and again only when
// it changes, so a stream does not repeat the same warning on every
// rotation.
type onceLog struct {
	last string
}

// changed reports whether parts differ from what was logged last, and
// remembers them.
func (o *onceLog) changed(parts []string) bool {
	key := strings.Join(parts, "\x00")
	if key == o.last {
		return false
	}
	o.last = key
	return key != ""
}
