package release

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PGState keeps the release index and the edges' reports in PostgreSQL,
// so every cityhub replica on the database answers edges and the console
// alike: a rollout wave advanced on one replica is what the next edge
// asking any replica gets. Bundles stay files under DATA/firmware/blobs,
// which replicas must share (or each hold, published on each).
type PGState struct{ pool *pgxpool.Pool }

const pgFirmwareSchema = `
CREATE TABLE IF NOT EXISTS firmware_index (id integer PRIMARY KEY CHECK (id = 1), idx jsonb NOT NULL);
INSERT INTO firmware_index (id, idx) VALUES (1, '{"releases":[]}') ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS firmware_reports (edge_id text PRIMARY KEY, report jsonb NOT NULL);
`

// pgFirmwareLock serializes schema creation across replicas.
const pgFirmwareLock = 0x6669726d77617265 // "firmware"

const pgTimeout = 30 * time.Second

// OpenPGState connects to the database at url and prepares its tables.
func OpenPGState(ctx context.Context, url string) (*PGState, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("firmware state database: %w", err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(pgFirmwareLock)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, pgFirmwareSchema)
		return err
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("firmware state database: prepare schema: %w", err)
	}
	return &PGState{pool: pool}, nil
}

// Close closes the pool.
func (s *PGState) Close() { s.pool.Close() }

// Releases implements State.
func (s *PGState) Releases() ([]Release, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	var idx index
	if err := s.pool.QueryRow(ctx, "SELECT idx FROM firmware_index WHERE id = 1").Scan(&idx); err != nil {
		return nil, err
	}
	return idx.Releases, nil
}

// UpdateReleases implements State.
func (s *PGState) UpdateReleases(fn func(rels *[]Release) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var idx index
		if err := tx.QueryRow(ctx, "SELECT idx FROM firmware_index WHERE id = 1 FOR UPDATE").Scan(&idx); err != nil {
			return err
		}
		if err := fn(&idx.Releases); err != nil {
			return err
		}
		if idx.Releases == nil {
			idx.Releases = []Release{}
		}
		_, err := tx.Exec(ctx, "UPDATE firmware_index SET idx = $1 WHERE id = 1", idx)
		return err
	})
}

// KeepReport implements State.
func (s *PGState) KeepReport(rep EdgeReport) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	var old EdgeReport
	err := s.pool.QueryRow(ctx, "SELECT report FROM firmware_reports WHERE edge_id = $1", rep.EdgeID).Scan(&old)
	switch {
	case err == nil:
		if sameReport(old, rep) {
			return nil
		}
	case errors.Is(err, pgx.ErrNoRows):
		var n int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM firmware_reports").Scan(&n); err != nil {
			return err
		}
		if n >= maxEdges {
			return nil
		}
	default:
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO firmware_reports (edge_id, report) VALUES ($1, $2)
		ON CONFLICT (edge_id) DO UPDATE SET report = EXCLUDED.report`, rep.EdgeID, rep)
	if err != nil {
		return fmt.Errorf("keep the report of edge %s: %w", rep.EdgeID, err)
	}
	return nil
}

// Reports implements State.
func (s *PGState) Reports() ([]EdgeReport, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT report FROM firmware_reports ORDER BY edge_id")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (EdgeReport, error) {
		var rep EdgeReport
		err := r.Scan(&rep)
		return rep, err
	})
}
