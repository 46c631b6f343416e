package hub

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

var bHealth = []byte("sync_health") // slot unix seconds (8 bytes BE) -> SyncPoint

func slotKey(t time.Time) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(Slot(t).Unix()))
	return k[:]
}

// updatePoint reads the slot's point (or a new one), lets fn change it and
// writes it back.
func (s *BoltStore) updatePoint(slot time.Time, fn func(*SyncPoint), prune time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bHealth)
		if err != nil {
			return err
		}
		p := SyncPoint{At: Slot(slot)}
		if err := getJSON(b, slotKey(slot), &p); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		fn(&p)
		if err := putJSON(b, slotKey(slot), p); err != nil {
			return err
		}
		if prune.IsZero() {
			return nil
		}
		c := b.Cursor()
		end := slotKey(prune)
		for k, _ := c.First(); k != nil && string(k) < string(end); k, _ = c.First() {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// AddSyncCounts implements Store.
func (s *BoltStore) AddSyncCounts(_ context.Context, slot time.Time, records, errs uint64) error {
	return s.updatePoint(slot, func(p *SyncPoint) { p.Records += records; p.Errors += errs }, time.Time{})
}

// SampleSync implements Store.
func (s *BoltStore) SampleSync(_ context.Context, slot time.Time, online, edges int, backlog uint64, prune time.Time) error {
	return s.updatePoint(slot, func(p *SyncPoint) {
		p.Online, p.Edges, p.Backlog, p.Sampled = online, edges, backlog, true
	}, prune)
}

// SyncPoints implements Store.
func (s *BoltStore) SyncPoints(_ context.Context, since time.Time) ([]SyncPoint, error) {
	out := []SyncPoint{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bHealth)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(slotKey(since)); k != nil; k, v = c.Next() {
			var p SyncPoint
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// pgHealthSchema is the health series' table; additive.
const pgHealthSchema = `
CREATE TABLE IF NOT EXISTS sync_health (
	slot timestamptz PRIMARY KEY, records bigint NOT NULL DEFAULT 0, errors bigint NOT NULL DEFAULT 0,
	online integer NOT NULL DEFAULT 0, edges integer NOT NULL DEFAULT 0, backlog bigint NOT NULL DEFAULT 0,
	sampled boolean NOT NULL DEFAULT false);
`

// AddSyncCounts implements Store: every replica adds its own counts.
func (s *PGStore) AddSyncCounts(ctx context.Context, slot time.Time, records, errs uint64) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO sync_health (slot, records, errors) VALUES ($1, $2, $3)
		ON CONFLICT (slot) DO UPDATE SET records = sync_health.records + EXCLUDED.records, errors = sync_health.errors + EXCLUDED.errors`,
		Slot(slot), int64(records), int64(errs))
	return err
}

// SampleSync implements Store.
func (s *PGStore) SampleSync(ctx context.Context, slot time.Time, online, edges int, backlog uint64, prune time.Time) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO sync_health (slot, online, edges, backlog, sampled) VALUES ($1, $2, $3, $4, true)
			ON CONFLICT (slot) DO UPDATE SET online = EXCLUDED.online, edges = EXCLUDED.edges, backlog = EXCLUDED.backlog, sampled = true`,
			Slot(slot), online, edges, int64(backlog)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM sync_health WHERE slot < $1", prune)
		return err
	})
}

// SyncPoints implements Store.
func (s *PGStore) SyncPoints(ctx context.Context, since time.Time) ([]SyncPoint, error) {
	rows, err := s.pool.Query(ctx, "SELECT slot, records, errors, online, edges, backlog, sampled FROM sync_health WHERE slot >= $1 ORDER BY slot", Slot(since))
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SyncPoint, error) {
		var p SyncPoint
		var rec, errs, bl int64
		err := r.Scan(&p.At, &rec, &errs, &p.Online, &p.Edges, &bl, &p.Sampled)
		p.At, p.Records, p.Errors, p.Backlog = p.At.UTC(), uint64(rec), uint64(errs), uint64(bl)
		return p, err
	})
	if out == nil {
		out = []SyncPoint{}
	}
	return out, err
}
