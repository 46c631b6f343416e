package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/media"
)

// pageLimit is how many items one catalogue request asks for.
const pageLimit = 500

// maxBackoff caps the wait between failed syncs.
const maxBackoff = 5 * time.Minute

// index is the city catalogue as the edge keeps it: items in the store,
// pulled from the hub by cursor, and the state of that sync.
type index struct {
	db       *bolt.DB
	hub      string
	client   *http.Client
	log      *slog.Logger
	interval time.Duration
	// changed hears of every stored page's items (a new version of an
	// item deserves a new download try; the prefetcher looks again).
	changed func(items []media.Item)

	mu sync.Mutex
	st SyncStatus
}

// SyncStatus is the catalogue sync's state, reported in the API.
type SyncStatus struct {
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
}

// status is the sync's state now.
func (c *index) status() SyncStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// item reads one catalogue item from the store.
func (c *index) item(id string) (media.Item, bool, error) {
	var it media.Item
	var ok bool
	err := c.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketItems).Get([]byte(id))
		if b == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(b, &it)
	})
	return it, ok, err
}

func (c *index) syncLoop(ctx context.Context) {
	wait := time.Duration(0)
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		n, err := c.SyncOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Warn("catalogue sync failed; will retry", "hub", c.hub, "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		if n > 0 {
			c.log.Info("catalogue synced", "changed_items", n)
		}
		wait, backoff = c.interval, time.Second
	}
}

// SyncOnce pulls every catalogue change since the stored cursor, page by
// page; each page is fetched first and then written with its cursor in one
// transaction, so a cut between pages loses nothing and repeats nothing.
func (c *index) SyncOnce(ctx context.Context) (changed int, err error) {
	if c.hub == "" {
		return 0, errOffline
	}
	c.mu.Lock()
	c.st.LastAttempt = time.Now()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.st.LastError = err.Error()
		} else {
			c.st.LastError, c.st.LastSuccess = "", time.Now()
		}
	}()
	for range 10000 { // bound: 5M items per sync
		cur, err := c.cursor()
		if err != nil {
			return changed, err
		}
		page, err := c.fetchPage(ctx, cur)
		if err != nil {
			return changed, err
		}
		next, _ := media.ParseCursor(page.Next) // validated by DecodeChanges
		err = c.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(BucketItems)
			for _, it := range page.Items {
				v, err := json.Marshal(it)
				if err != nil {
					return err
				}
				if err := b.Put([]byte(it.ID), v); err != nil {
					return err
				}
			}
			return tx.Bucket(BucketMeta).Put(keyCursor, []byte(strconv.FormatUint(next, 10)))
		})
		if err != nil {
			return changed, fmt.Errorf("store catalogue page: %w", err)
		}
		changed += len(page.Items)
		if len(page.Items) > 0 && c.changed != nil {
			c.changed(page.Items)
		}
		if !page.More || next == cur {
			return changed, nil
		}
	}
	return changed, nil
}

func (c *index) fetchPage(ctx context.Context, since uint64) (media.Changes, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := c.hub + "/api/v1/catalog?" + url.Values{"since": {strconv.FormatUint(since, 10)}, "limit": {strconv.Itoa(pageLimit)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return media.Changes{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return media.Changes{}, fmt.Errorf("hub unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return media.Changes{}, fmt.Errorf("hub answered %s: %s", resp.Status, b)
	}
	return media.DecodeChanges(resp.Body, since)
}

func (c *index) cursor() (uint64, error) {
	var s string
	err := c.db.View(func(tx *bolt.Tx) error {
		s = string(tx.Bucket(BucketMeta).Get(keyCursor))
		return nil
	})
	if err != nil {
		return 0, err
	}
	return media.ParseCursor(s)
}
