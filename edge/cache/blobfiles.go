package cache

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Open blob handles kept between requests. A small lesson file costs an
// open (a path walk through blobs/sha256/ab/), a poller registration, an
// fstat and a close per request otherwise: a fifth of the kernel's work
// of sending it. sendfile reads from the file's own offset, so a handle
// serves one request at a time; a blob read by several clients at once
// gets several handles.
const (
	defaultMaxIdleFiles = 4096
	maxIdlePerBlob      = 8
	// revalidateAfter is how long a handle is trusted to be the file at
	// the blob's path: past it, the path is stat'ed again, so a blob
	// removed or replaced by anything but the cache's own eviction (which
	// drops handles at once) is not served for longer than this.
	revalidateAfter = 2 * time.Second
)

// blobFiles keeps idle open handles of recently served blobs, least
// recently used dropped first, bounded in total. Content is addressed by
// its SHA-256, so a handle can only ever hold the bytes its name promises;
// what the bound on staleness protects is the disk space of an evicted
// blob and the size a handle was checked against.
type blobFiles struct {
	path    func(sum string) string
	maxIdle int
	now     func() time.Time

	mu   sync.Mutex
	ents map[string]*blobFile
	lru  list.List // *blobFile, most recently used in front
	idle int       // handles in every entry's idle list
}

// blobFile is one blob's entry: its checked size and its idle handles.
type blobFile struct {
	sum     string
	size    int64
	elem    *list.Element
	idle    []*os.File
	checked time.Time   // when the path was last seen to name this file
	fi      os.FileInfo // of the open file, for os.SameFile
	modTime time.Time   // the blob's mtime (least-recently-used eviction's record)
	// sent is when (Unix ns) the fast path last sent the whole blob
	// from this file: its pages were read then (see warmFor).
	sent atomic.Int64
}

func newBlobFiles(path func(sum string) string) *blobFiles {
	max := defaultMaxIdleFiles
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur > 0 {
		// Leave most descriptors to connections, the store and downloads.
		max = int(min(uint64(max), lim.Cur/4))
	}
	return &blobFiles{path: path, maxIdle: max, now: time.Now, ents: map[string]*blobFile{}}
}

// blobHandle is one request's use of a blob's open file.
type blobHandle struct {
	*os.File
	ent *blobFile
	// modTime is the blob's mtime as last known, for touch.
	modTime time.Time
}

// open returns a handle on sum's blob positioned at its start, checked to
// be a regular file of size bytes. The error wraps fs.ErrNotExist when the
// blob is not there. Give it back with put.
func (b *blobFiles) open(sum string, size int64) (blobHandle, error) {
	return b.get(sum, size, true)
}

// openAt is open for a reader that reads at explicit offsets (pread,
// sendfile with an offset): the handle's own offset may be anywhere, so
// it is not sought back to the start.
func (b *blobFiles) openAt(sum string, size int64) (blobHandle, error) {
	return b.get(sum, size, false)
}

func (b *blobFiles) get(sum string, size int64, seek bool) (blobHandle, error) {
	now := b.now()
	b.mu.Lock()
	e := b.ents[sum]
	if e != nil && e.size == size && len(e.idle) > 0 && now.Sub(e.checked) >= revalidateAfter {
		// Revalidate by the path's stat rather than a new open: the same
		// file still there keeps its handles.
		fi, hot := e.fi, now.Sub(e.checked) < warmFor
		b.mu.Unlock()
		same := stillAt(b.path(sum), fi, size, hot)
		b.mu.Lock()
		if same && b.ents[sum] == e {
			e.checked = now
		}
	}
	if e != nil && b.ents[sum] == e && e.size == size && now.Sub(e.checked) < revalidateAfter && len(e.idle) > 0 {
		f := e.idle[len(e.idle)-1]
		e.idle = e.idle[:len(e.idle)-1]
		b.idle--
		b.lru.MoveToFront(e.elem)
		mt := e.modTime
		b.mu.Unlock()
		if seek {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				_ = f.Close()
				return blobHandle{}, err
			}
		}
		return blobHandle{File: f, ent: e, modTime: mt}, nil
	}
	b.mu.Unlock()
	f, err := os.Open(b.path(sum))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Deleted behind the cache's back (not by eviction, which
			// drops its handles): idle handles would keep its disk space.
			b.drop(sum)
		}
		return blobHandle{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return blobHandle{}, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != size {
		_ = f.Close()
		return blobHandle{}, fmt.Errorf("blob %s is %d bytes, the catalogue says %d", sum, fi.Size(), size)
	}
	var stale []*os.File
	b.mu.Lock()
	e = b.ents[sum]
	if e == nil || !os.SameFile(e.fi, fi) || e.size != size {
		// New, or the path now names another file: what the old entry
		// holds is no longer what the cache serves.
		if e != nil {
			stale = b.dropLocked(e)
		}
		e = &blobFile{sum: sum, size: size, fi: fi, modTime: fi.ModTime()}
		e.elem = b.lru.PushFront(e)
		b.ents[sum] = e
	}
	e.checked = now
	h := blobHandle{File: f, ent: e, modTime: e.modTime}
	b.mu.Unlock()
	for _, f := range stale {
		_ = f.Close()
	}
	return h, nil
}

// put gives a handle back: kept idle for the next request when its entry is
// still current and the bounds allow, closed otherwise.
func (b *blobFiles) put(h blobHandle) {
	b.mu.Lock()
	e := h.ent
	if b.ents[e.sum] != e || len(e.idle) >= maxIdlePerBlob || b.maxIdle <= 0 {
		b.mu.Unlock()
		_ = h.Close()
		return
	}
	e.idle = append(e.idle, h.File)
	b.idle++
	b.lru.MoveToFront(e.elem)
	var closing []*os.File
	for b.idle > b.maxIdle {
		last := b.lru.Back().Value.(*blobFile)
		if len(last.idle) == 0 {
			// Only handles in use: forget the entry; they close on put.
			b.lru.Remove(last.elem)
			delete(b.ents, last.sum)
			continue
		}
		closing = append(closing, last.idle[0])
		last.idle = last.idle[1:]
		b.idle--
	}
	b.mu.Unlock()
	for _, f := range closing {
		_ = f.Close()
	}
}

// touched records that the blob's mtime was set to t.
func (b *blobFiles) touched(h blobHandle, t time.Time) {
	b.mu.Lock()
	h.ent.modTime = t
	b.mu.Unlock()
}

// drop closes sum's idle handles and forgets it; handles in use close when
// they are put back. Eviction calls it with the blob's removal, so the
// disk space comes back at once.
func (b *blobFiles) drop(sum string) {
	b.mu.Lock()
	var closing []*os.File
	if e := b.ents[sum]; e != nil {
		closing = b.dropLocked(e)
	}
	b.mu.Unlock()
	for _, f := range closing {
		_ = f.Close()
	}
}

func (b *blobFiles) dropLocked(e *blobFile) []*os.File {
	closing := e.idle
	e.idle = nil
	b.idle -= len(closing)
	b.lru.Remove(e.elem)
	delete(b.ents, e.sum)
	return closing
}

// closeAll closes every idle handle (the cache is closing).
func (b *blobFiles) closeAll() error {
	b.mu.Lock()
	var errs []error
	for _, e := range b.ents {
		for _, f := range b.dropLocked(e) {
			errs = append(errs, f.Close())
		}
	}
	b.mu.Unlock()
	return errors.Join(errs...)
}
