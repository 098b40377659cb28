package adminapi

import (
	"context"
	"os/user"
	"strconv"
	"sync"

	"github.com/nhid/nhid/pkg/peercred"
)

// unknownCaller names a caller without kernel credentials; AuthorizePeer
// refuses those, so it shows only where the interceptors are not used.
const unknownCaller = "unknown"

// callerName names the admin caller for audit records and approvals: on
// the mTLS listener, the SPIFFE ID of its verified X.509-SVID; on the
// admin socket, "unix:<user>(<uid>)" from the kernel's peer credentials,
// with the uid in place of the user name when the uid has no passwd
// entry. Only the uid is trusted; the name is looked up for people
// reading the log.
func callerName(ctx context.Context) string {
	if id, ok := svidCaller(ctx); ok {
		return id.String()
	}
	p, ok := peercred.FromContext(ctx)
	if !ok {
		return unknownCaller
	}
	uid := strconv.FormatUint(uint64(p.UID()), 10)
	return "unix:" + userNames.lookup(uid) + "(" + uid + ")"
}

// userNames caches uid → user name lookups: admin calls are rare, but
// a batch tool may make many, and /etc/passwd does not change under us
// often enough to matter for a log.
var userNames = &nameCache{names: make(map[string]string)}

type nameCache struct {
	mu    sync.Mutex
	names map[string]string
}

// maxCachedNames bounds the cache; past it, it starts over.
const maxCachedNames = 256

func (c *nameCache) lookup(uid string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name, ok := c.names[uid]; ok {
		return name
	}
	name := uid
	if u, err := user.LookupId(uid); err == nil && u.Username != "" {
		name = u.Username
	}
	if len(c.names) >= maxCachedNames {
		clear(c.names)
	}
	c.names[uid] = name
	return name
}
