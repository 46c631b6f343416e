package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campusedge/campusedge/edge/media"
)

// pgCatalogSchema is the catalogue's part of the hub's PostgreSQL schema.
const pgCatalogSchema = `
CREATE SEQUENCE IF NOT EXISTS catalog_seq;
CREATE TABLE IF NOT EXISTS catalog_items (id text PRIMARY KEY, seq bigint NOT NULL UNIQUE, item jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS catalog_review (id text PRIMARY KEY, received timestamptz NOT NULL, school text NOT NULL,
	state text NOT NULL, sub jsonb NOT NULL);
`

// pgCatalogLock serializes catalogue writers across replicas, so change
// numbers become visible in order: an edge paging from a cursor never
// skips an item a slower writer committed with a lower number.
const pgCatalogLock = 0x636174616c6f67 // "catalog"

// pgTimeout bounds one catalogue statement.
const pgTimeout = 30 * time.Second

// pgMeta keeps the catalogue in PostgreSQL, shared by every replica.
type pgMeta struct{ pool *pgxpool.Pool }

// OpenPG opens a catalogue whose records are in the PostgreSQL database at
// url (shared by any number of cityhub replicas) and whose blobs are under
// dir/blobs: replicas must see the same blobs (one shared directory, or
// each replica's copy), since a record names bytes by their SHA-256.
func OpenPG(ctx context.Context, dir, url string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("catalogue database: %w", err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(pgCatalogLock)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, pgCatalogSchema)
		return err
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("catalogue database: prepare schema (is the database reachable and the user allowed to create tables?): %w", err)
	}
	return &Store{meta: pgMeta{pool}, dir: dir}, nil
}

func (m pgMeta) close() error { m.pool.Close(); return nil }

func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), pgTimeout)
}

// tx runs fn in a transaction holding the catalogue's write lock.
func (m pgMeta) tx(fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := ctxTimeout()
	defer cancel()
	return pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(pgCatalogLock)); err != nil {
			return err
		}
		return fn(ctx, tx)
	})
}

func (m pgMeta) put(it media.Item) (media.Item, error) {
	var saved media.Item
	err := m.tx(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		saved, err = pgPut(ctx, tx, it)
		return err
	})
	return saved, err
}

// pgPut records it inside tx (which holds the write lock).
func pgPut(ctx context.Context, tx pgx.Tx, it media.Item) (media.Item, error) {
	var raw []byte
	err := tx.QueryRow(ctx, "SELECT item FROM catalog_items WHERE id = $1", it.ID).Scan(&raw)
	if err == nil {
		var prev media.Item
		if json.Unmarshal(raw, &prev) == nil {
			seq := prev.Seq
			prev.Seq = 0
			if prev == it {
				it.Seq = seq
				return it, nil
			}
		}
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return media.Item{}, err
	}
	var seq int64
	if err := tx.QueryRow(ctx, "SELECT nextval('catalog_seq')").Scan(&seq); err != nil {
		return media.Item{}, err
	}
	it.Seq = uint64(seq)
	b, err := json.Marshal(it)
	if err != nil {
		return media.Item{}, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO catalog_items (id, seq, item) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, item = EXCLUDED.item`, it.ID, seq, b)
	return it, err
}

func (m pgMeta) get(id string) (media.Item, error) {
	ctx, cancel := ctxTimeout()
	defer cancel()
	var raw []byte
	err := m.pool.QueryRow(ctx, "SELECT item FROM catalog_items WHERE id = $1", id).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return media.Item{}, fmt.Errorf("%w: no catalogue item %q", ErrNotFound, id)
	} else if err != nil {
		return media.Item{}, err
	}
	var it media.Item
	return it, json.Unmarshal(raw, &it)
}

func (m pgMeta) changes(since uint64, limit int) (media.Changes, error) {
	ctx, cancel := ctxTimeout()
	defer cancel()
	out := media.Changes{Items: []media.Item{}, Next: strconv.FormatUint(since, 10)}
	rows, err := m.pool.Query(ctx, "SELECT item FROM catalog_items WHERE seq > $1 ORDER BY seq LIMIT $2", int64(since), limit+1)
	if err != nil {
		return out, err
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (media.Item, error) {
		var raw []byte
		if err := r.Scan(&raw); err != nil {
			return media.Item{}, err
		}
		var it media.Item
		return it, json.Unmarshal(raw, &it)
	})
	if err != nil {
		return out, err
	}
	if len(items) > limit {
		items, out.More = items[:limit], true
	}
	if len(items) > 0 {
		out.Items = items
		out.Next = strconv.FormatUint(items[len(items)-1].Seq, 10)
	}
	return out, nil
}

func (m pgMeta) submit(sub Submission) error {
	b, err := json.Marshal(sub)
	if err != nil {
		return err
	}
	return m.tx(func(ctx context.Context, tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM catalog_items WHERE id = $1", sub.Item.ID).Scan(&n); err != nil || n > 0 {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO catalog_review (id, received, school, state, sub) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (id) DO NOTHING`, sub.Item.ID, sub.Received, sub.School, sub.State, b)
		return err
	})
}

func (m pgMeta) submitted(id string) bool {
	ctx, cancel := ctxTimeout()
	defer cancel()
	var n int
	err := m.pool.QueryRow(ctx, "SELECT count(*) FROM catalog_review WHERE id = $1", id).Scan(&n)
	return err == nil && n > 0
}

func (m pgMeta) submission(id string) (Submission, error) {
	ctx, cancel := ctxTimeout()
	defer cancel()
	var raw []byte
	err := m.pool.QueryRow(ctx, "SELECT sub FROM catalog_review WHERE id = $1", id).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return Submission{}, fmt.Errorf("%w: no upload %q awaiting review", ErrNotFound, id)
	} else if err != nil {
		return Submission{}, err
	}
	var sub Submission
	return sub, json.Unmarshal(raw, &sub)
}

func (m pgMeta) submissions(state, school string, limit int) ([]Submission, error) {
	ctx, cancel := ctxTimeout()
	defer cancel()
	if limit <= 0 {
		limit = 1 << 30
	}
	rows, err := m.pool.Query(ctx, `SELECT sub FROM catalog_review WHERE ($1 = '' OR state = $1) AND ($2 = '' OR school = $2)
		ORDER BY received, id LIMIT $3`, state, school, limit)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Submission, error) {
		var raw []byte
		if err := r.Scan(&raw); err != nil {
			return Submission{}, err
		}
		var sub Submission
		return sub, json.Unmarshal(raw, &sub)
	})
	if out == nil {
		out = []Submission{}
	}
	return out, err
}

func (m pgMeta) decide(id string, fn func(*Submission) (*media.Item, error)) (Submission, error) {
	var sub Submission
	err := m.tx(func(ctx context.Context, tx pgx.Tx) error {
		var raw []byte
		err := tx.QueryRow(ctx, "SELECT sub FROM catalog_review WHERE id = $1 FOR UPDATE", id).Scan(&raw)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: no upload %q awaiting review", ErrNotFound, id)
		} else if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &sub); err != nil {
			return err
		}
		it, err := fn(&sub)
		if err != nil {
			return err
		}
		if it != nil {
			saved, err := pgPut(ctx, tx, *it)
			if err != nil {
				return err
			}
			sub.Item = saved
		}
		b, err := json.Marshal(sub)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE catalog_review SET state = $2, sub = $3 WHERE id = $1", id, sub.State, b)
		return err
	})
	return sub, err
}
