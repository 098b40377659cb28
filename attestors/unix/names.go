package unix

import (
	"errors"
	"os/user"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// errNoName reports an id without a name in the user or group database.
var errNoName = errors.New("no name for id")

// Where the user and group databases usually live. A change to either file
// empties the matching cache at once.
const (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
)

// nameTTL bounds how long a name is trusted when its database changes
// without the file changing (NSS sources such as LDAP or sssd).
const nameTTL = 10 * time.Second

// fileRecheck is how often the database file is looked at (one stat).
const fileRecheck = time.Second

// maxCachedNames bounds each cache; past it, the cache starts over.
const maxCachedNames = 4096

func lookupUserName(uid string) (string, error) {
	u, err := user.LookupId(uid)
	if errors.As(err, new(user.UnknownUserIdError)) {
		return "", errNoName
	}
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

func lookupGroupName(gid string) (string, error) {
	g, err := user.LookupGroupId(gid)
	if errors.As(err, new(user.UnknownGroupIdError)) {
		return "", errNoName
	}
	if err != nil {
		return "", err
	}
	return g.Name, nil
}

// nameCache remembers what a user or group lookup said about an id, the
// name or that there is none, so that attesting a process does not parse
// /etc/passwd and /etc/group (or call into NSS) every time. An answer is
// dropped after nameTTL, and every answer is dropped when the database
// file's identity (device, inode, size, mtime, ctime) changes, which is
// checked at most every fileRecheck: a renamed user or a reassigned id
// yields a stale selector for a second at most when the change is in the
// file, and for nameTTL at most from other sources. Lookup errors other
// than "no such id" are not cached.
type nameCache struct {
	lookup func(id string) (string, error)
	file   string
	now    func() time.Time

	mu      sync.Mutex
	version fileVersion
	checked time.Time // when version was read
	names   map[string]cachedName
}

type cachedName struct {
	name string
	err  error // nil or errNoName
	at   time.Time
}

// fileVersion identifies a file's content without reading it; the zero
// value stands for a file that cannot be stat'ed.
type fileVersion struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

func statVersion(path string) fileVersion {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileVersion{}
	}
	return fileVersion{dev: uint64(st.Dev), ino: uint64(st.Ino), size: int64(st.Size), mtime: st.Mtim, ctime: st.Ctim}
}

func newNameCache(file string, lookup func(string) (string, error)) *nameCache {
	return &nameCache{lookup: lookup, file: file, now: time.Now, names: make(map[string]cachedName)}
}

// get resolves id through the cache.
func (c *nameCache) get(id string) (string, error) {
	now := c.now()
	c.mu.Lock()
	if now.Sub(c.checked) >= fileRecheck || now.Before(c.checked) {
		// The file is looked at before the lookup reads it: a change in
		// between leaves the answer filed under the old version, which
		// the next check discards.
		c.mu.Unlock()
		version := statVersion(c.file)
		c.mu.Lock()
		c.checked = now
		if version != c.version {
			clear(c.names)
			c.version = version
		}
	}
	version := c.version
	e, ok := c.names[id]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < nameTTL && !now.Before(e.at) {
		return e.name, e.err
	}

	name, err := c.lookup(id)
	if err != nil && !errors.Is(err, errNoName) {
		return "", err
	}
	c.mu.Lock()
	if c.version == version {
		if len(c.names) >= maxCachedNames {
			clear(c.names)
		}
		c.names[id] = cachedName{name: name, err: err, at: now}
	}
	c.mu.Unlock()
	return name, err
}
