package cache

import (
	"bytes"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/campusedge/campusedge/edge/media"
)

// maxServedItems bounds the catalogue items /media keeps decoded in
// memory; past it the whole set is dropped and refilled by use (a school
// serves a few hundred lessons a day, the city catalogue holds many more).
const maxServedItems = 8192

// servedItem is a catalogue item as /media serves it: decoded once, with
// its response header values built once. The header slices are shared by
// every response of the item and must never be modified in place (net/http
// only reads them; Header.Set and Del replace or drop a key's slice).
type servedItem struct {
	media.Item
	gen    uint64      // the catalogue generation it was read in
	header http.Header // ETag, Content-Type, Cache-Control, ... (not Content-Length)
	length []string    // Content-Length of the whole item
	// raw is the header of a whole-item 200 response as net/http writes
	// it (sorted, Content-Length included), without the status line and
	// Date: what the fast path (fastpath.go) sends.
	raw []byte
}

// servedItems caches catalogue items for /media: a store read and a JSON
// decode per request cost more than the rest of serving a small file. It is
// invalidated as a whole whenever an item is written (catalogue sync,
// upload): each entry carries the generation it was read in and is used
// only while no write has happened since.
type servedItems struct {
	read func(id string) (media.Item, bool, error) // the store
	gen  atomic.Uint64

	mu    sync.RWMutex
	items map[string]*servedItem
}

func newServedItems(read func(id string) (media.Item, bool, error)) *servedItems {
	return &servedItems{read: read, items: map[string]*servedItem{}}
}

// changed must be called after every committed write of catalogue items.
// An entry read before the write carries an older generation; one read
// after it but stamped before the bump is read again once (harmless).
func (s *servedItems) changed() { s.gen.Add(1) }

// get returns id's item, from memory when no item was written since it
// was read. Unknown ids are not remembered (they may be synced any time).
func (s *servedItems) get(id string) (*servedItem, bool, error) {
	gen := s.gen.Load()
	s.mu.RLock()
	e := s.items[id]
	s.mu.RUnlock()
	if e != nil && e.gen == gen {
		return e, true, nil
	}
	it, ok, err := s.read(id)
	if err != nil || !ok {
		return nil, ok, err
	}
	e = newServedItem(it, gen)
	s.mu.Lock()
	if len(s.items) >= maxServedItems {
		s.items = map[string]*servedItem{}
	}
	s.items[id] = e
	s.mu.Unlock()
	return e, true, nil
}

func newServedItem(it media.Item, gen uint64) *servedItem {
	h := http.Header{}
	media.SetServeHeaders(h, it)
	h.Set("ETag", media.ETag(it.SHA256))
	h.Set("Cache-Control", "public, max-age=86400")
	h.Set("Accept-Ranges", "bytes")
	for k, v := range h { // capacity = length: an append elsewhere copies
		h[k] = v[:len(v):len(v)]
	}
	e := &servedItem{Item: it, gen: gen, header: h, length: []string{strconv.FormatInt(it.Size, 10)}}
	whole := h.Clone()
	whole["Content-Length"] = e.length
	var b bytes.Buffer
	_ = whole.Write(&b) // a bytes.Buffer does not fail
	e.raw = b.Bytes()
	return e
}

// setHeader puts the item's header values on a response.
func (e *servedItem) setHeader(h http.Header) {
	for k, v := range e.header {
		h[k] = v
	}
}
