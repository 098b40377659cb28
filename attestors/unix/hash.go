package unix

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// hashChunk is how much is hashed between context checks.
const hashChunk = 1 << 20

// maxFlightRetries bounds how often a caller restarts a shared hash that
// failed only because the caller who started it gave up.
const maxFlightRetries = 3

// fileKey identifies a file's content without reading it: a replaced or
// rewritten binary changes its inode, size, mtime or ctime.
type fileKey struct {
	dev, ino            uint64
	size                int64
	mtimeSec, mtimeNsec int64
	ctimeSec, ctimeNsec int64
}

func (k fileKey) String() string {
	return fmt.Sprintf("%d:%d:%d:%d.%d:%d.%d", k.dev, k.ino, k.size, k.mtimeSec, k.mtimeNsec, k.ctimeSec, k.ctimeNsec)
}

// fileKeyOf identifies the open file f.
func fileKeyOf(f *os.File) (fileKey, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return fileKey{}, fmt.Errorf("stat executable: %w", err)
	}
	var st unix.Stat_t
	var statErr error
	if err := raw.Control(func(fd uintptr) { statErr = unix.Fstat(int(fd), &st) }); err != nil {
		return fileKey{}, fmt.Errorf("stat executable: %w", err)
	}
	if statErr != nil {
		return fileKey{}, fmt.Errorf("stat executable: %w", statErr)
	}
	return keyOf(&st), nil
}

// keyOf identifies the file st describes.
func keyOf(st *unix.Stat_t) fileKey {
	return fileKey{
		dev: uint64(st.Dev), ino: uint64(st.Ino), size: int64(st.Size),
		mtimeSec: int64(st.Mtim.Sec), mtimeNsec: int64(st.Mtim.Nsec),
		ctimeSec: int64(st.Ctim.Sec), ctimeNsec: int64(st.Ctim.Nsec),
	}
}

// hashCache is a bounded LRU from file identity to hex SHA-256.
type hashCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recently used; values are *cacheItem
	items map[fileKey]*list.Element
}

type cacheItem struct {
	key fileKey
	sum string
}

func newHashCache(max int) *hashCache {
	return &hashCache{max: max, order: list.New(), items: make(map[fileKey]*list.Element)}
}

func (c *hashCache) get(k fileKey) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return "", false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheItem).sum, true
}

func (c *hashCache) add(k fileKey, sum string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.items[k] = c.order.PushFront(&cacheItem{key: k, sum: sum})
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*cacheItem).key)
	}
}

func (c *hashCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// sha256Of returns the hex SHA-256 of f, whose identity is k, from the
// cache or by hashing it once however many callers ask at the same time.
func (a *Attestor) sha256Of(ctx context.Context, f *os.File, k fileKey) (string, error) {
	for attempt := 0; ; attempt++ {
		if sum, ok := a.cache.get(k); ok {
			return sum, nil
		}
		ch := a.flights.DoChan(k.String(), func() (any, error) {
			return a.hashAndCache(ctx, f, k)
		})
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case r := <-ch:
			if r.Err == nil {
				return r.Val.(string), nil
			}
			// The flight ran under the context of whoever started it; if
			// only that caller gave up, this one starts its own.
			if isContextErr(r.Err) && ctx.Err() == nil && attempt < maxFlightRetries {
				continue
			}
			return "", r.Err
		}
	}
}

func (a *Attestor) hashAndCache(ctx context.Context, f *os.File, k fileKey) (string, error) {
	// A caller that missed the cache just before the previous flight for
	// this key finished starts a new flight; it must not hash again.
	if sum, ok := a.cache.get(k); ok {
		return sum, nil
	}
	// ReadAt leaves the file offset alone and stops at the size that was
	// keyed, so what is hashed is what the key names.
	sum, err := a.hash(ctx, io.NewSectionReader(f, 0, k.size))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return "", ctxErr
		}
		return "", err
	}
	a.cache.add(k, sum)
	return sum, nil
}

// sha256Stream hashes r in chunks, checking ctx between them so that a
// cancelled attestation stops reading a large binary.
func sha256Stream(ctx context.Context, r io.Reader) (string, error) {
	h := sha256.New()
	buf := make([]byte, hashChunk)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", fmt.Errorf("read executable: %w", err)
		}
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
