package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/campusedge/campusedge/edge/media"
)

// pageLimit is how many items one catalogue request asks for.
const pageLimit = 500

// maxBackoff caps the wait between failed syncs.
const maxBackoff = 5 * time.Minute

func (c *Cache) syncLoop(ctx context.Context) {
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
			c.log.Warn("catalogue sync failed; will retry", "hub", c.cfg.Hub, "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		if n > 0 {
			c.log.Info("catalogue synced", "changed_items", n)
		}
		wait, backoff = c.cfg.SyncInterval, time.Second
	}
}

// SyncOnce pulls every catalogue change since the stored cursor, page by
// page; each page is fetched first and then written with its cursor in one
// transaction, so a cut between pages loses nothing and repeats nothing.
func (c *Cache) SyncOnce(ctx context.Context) (changed int, err error) {
	if c.cfg.Hub == "" {
		return 0, errOffline
	}
	c.mu.Lock()
	c.syncSt.LastAttempt = time.Now()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.syncSt.LastError = err.Error()
		} else {
			c.syncSt.LastError, c.syncSt.LastSuccess = "", time.Now()
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
		err = c.cfg.DB.Update(func(tx *bolt.Tx) error {
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
		c.mu.Lock()
		for _, it := range page.Items { // a new version deserves a new try
			if f, ok := c.failures[it.ID]; ok && f.sha256 != it.SHA256 {
				delete(c.failures, it.ID)
			}
		}
		c.mu.Unlock()
		if len(page.Items) > 0 {
			c.Kick()
		}
		if !page.More || next == cur {
			return changed, nil
		}
	}
	return changed, nil
}

func (c *Cache) fetchPage(ctx context.Context, since uint64) (media.Changes, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := c.cfg.Hub + "/api/v1/catalog?" + url.Values{"since": {strconv.FormatUint(since, 10)}, "limit": {strconv.Itoa(pageLimit)}}.Encode()
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

func (c *Cache) cursor() (uint64, error) {
	var s string
	err := c.cfg.DB.View(func(tx *bolt.Tx) error {
		s = string(tx.Bucket(BucketMeta).Get(keyCursor))
		return nil
	})
	if err != nil {
		return 0, err
	}
	return media.ParseCursor(s)
}
