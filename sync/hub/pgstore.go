package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campusedge/campusedge/sync/wire"
)

// pgSchema is applied at start under an advisory lock, so replicas starting
// together do not race on it. Additive only.
const pgSchema = `
CREATE TABLE IF NOT EXISTS schools (
	code text PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS enrol_tokens (
	hash bytea PRIMARY KEY, school text NOT NULL REFERENCES schools(code),
	expires timestamptz NOT NULL, used_by text);
CREATE TABLE IF NOT EXISTS edges (
	id text PRIMARY KEY, school text NOT NULL REFERENCES schools(code), public_key bytea NOT NULL,
	enrolled timestamptz NOT NULL, revoked boolean NOT NULL DEFAULT false, acked bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS nonces (
	edge text NOT NULL, nonce text NOT NULL, expires timestamptz NOT NULL, PRIMARY KEY (edge, nonce));
CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires);
CREATE TABLE IF NOT EXISTS records (
	edge text NOT NULL, seq bigint NOT NULL, id text NOT NULL, school text NOT NULL, kind text NOT NULL,
	at bigint NOT NULL, payload bytea NOT NULL, received timestamptz NOT NULL, PRIMARY KEY (edge, seq));
CREATE INDEX IF NOT EXISTS records_school ON records (school, edge, seq);
CREATE TABLE IF NOT EXISTS changes (
	school text NOT NULL REFERENCES schools(code), seq bigint NOT NULL, kind text NOT NULL,
	data bytea NOT NULL, created timestamptz NOT NULL, PRIMARY KEY (school, seq));
`

// pgLockKey is the advisory lock that serialises schema set-up.
const pgLockKey = 0x63616d7075736564 // "campused"

// PGStore is the PostgreSQL backend: any number of cityhub replicas may
// share one database.
type PGStore struct{ pool *pgxpool.Pool }

// OpenPG connects to url (postgres://…) and prepares the schema.
func OpenPG(ctx context.Context, url string) (*PGStore, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(pgLockKey)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, pgSchema+pgStaffSchema+pgHealthSchema)
		return err
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: prepare schema (is the database reachable and the user allowed to create tables?): %w", err)
	}
	return &PGStore{pool: pool}, nil
}

// Close closes the pool.
func (s *PGStore) Close() error { s.pool.Close(); return nil }

func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func isFK(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}

// CreateSchool implements Store.
func (s *PGStore) CreateSchool(ctx context.Context, sc School) error {
	_, err := s.pool.Exec(ctx, "INSERT INTO schools (code, name, created) VALUES ($1, $2, $3)", sc.Code, sc.Name, sc.Created)
	if isUnique(err) {
		return fmt.Errorf("school %s: %w", sc.Code, ErrExists)
	}
	return err
}

// School implements Store.
func (s *PGStore) School(ctx context.Context, code string) (School, error) {
	var sc School
	err := s.pool.QueryRow(ctx, "SELECT code, name, created FROM schools WHERE code=$1", code).Scan(&sc.Code, &sc.Name, &sc.Created)
	if errors.Is(err, pgx.ErrNoRows) {
		return sc, ErrNotFound
	}
	return sc, err
}

// Schools implements Store.
func (s *PGStore) Schools(ctx context.Context) ([]School, error) {
	rows, err := s.pool.Query(ctx, "SELECT code, name, created FROM schools ORDER BY code")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (School, error) {
		var sc School
		err := r.Scan(&sc.Code, &sc.Name, &sc.Created)
		return sc, err
	})
}

// CreateEnrolToken implements Store.
func (s *PGStore) CreateEnrolToken(ctx context.Context, school string, hash []byte, expires time.Time) error {
	_, err := s.pool.Exec(ctx, "INSERT INTO enrol_tokens (hash, school, expires) VALUES ($1, $2, $3)", hash, school, expires)
	if isFK(err) {
		return fmt.Errorf("school %s: %w", school, ErrNotFound)
	}
	return err
}

// Enrol implements Store.
func (s *PGStore) Enrol(ctx context.Context, hash []byte, e Edge, now time.Time) (Edge, error) {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var school string
		// The row lock makes a token usable once even with two replicas.
		err := tx.QueryRow(ctx, "SELECT school FROM enrol_tokens WHERE hash=$1 AND used_by IS NULL AND expires > $2 FOR UPDATE", hash, now).Scan(&school)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrTokenInvalid
		} else if err != nil {
			return err
		}
		var old Edge
		err = tx.QueryRow(ctx, "SELECT school, public_key, acked FROM edges WHERE id=$1 FOR UPDATE", e.ID).Scan(&old.School, &old.PublicKey, &old.Acked)
		switch {
		case err == nil:
			if old.School != school || string(old.PublicKey) != string(e.PublicKey) {
				return fmt.Errorf("edge %s is enrolled for another school or with another key; revoke it first: %w", e.ID, ErrExists)
			}
			e.Acked = old.Acked
			if _, err := tx.Exec(ctx, "UPDATE edges SET enrolled=$2, revoked=false WHERE id=$1", e.ID, now); err != nil {
				return err
			}
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, "INSERT INTO edges (id, school, public_key, enrolled) VALUES ($1, $2, $3, $4)", e.ID, school, e.PublicKey, now); err != nil {
				return err
			}
		default:
			return err
		}
		e.School, e.Enrolled, e.Revoked = school, now, false
		_, err = tx.Exec(ctx, "UPDATE enrol_tokens SET used_by=$2 WHERE hash=$1", hash, e.ID)
		return err
	})
	return e, err
}

const edgeCols = "id, school, public_key, enrolled, revoked, acked, seen, version, cert_not_after, backlog, backlog_oldest, backlog_at"

func scanEdge(r pgx.Row) (Edge, error) {
	var e Edge
	var acked, backlog int64
	err := r.Scan(&e.ID, &e.School, &e.PublicKey, &e.Enrolled, &e.Revoked, &acked, &e.Seen, &e.Version, &e.CertNotAfter,
		&backlog, &e.BacklogOldest, &e.BacklogAt)
	e.Acked, e.Backlog = uint64(acked), uint64(backlog)
	e.Seen, e.CertNotAfter, e.BacklogAt = zeroEpoch(e.Seen), zeroEpoch(e.CertNotAfter), zeroEpoch(e.BacklogAt)
	return e, err
}

// Edge implements Store.
func (s *PGStore) Edge(ctx context.Context, id string) (Edge, error) {
	e, err := scanEdge(s.pool.QueryRow(ctx, "SELECT "+edgeCols+" FROM edges WHERE id=$1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return e, ErrNotFound
	}
	return e, err
}

// Edges implements Store.
func (s *PGStore) Edges(ctx context.Context, school string) ([]Edge, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+edgeCols+" FROM edges WHERE $1 = '' OR school = $1 ORDER BY id", school)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Edge, error) { return scanEdge(r) })
}

// RevokeEdge implements Store.
func (s *PGStore) RevokeEdge(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, "UPDATE edges SET revoked=true WHERE id=$1", id)
	if err == nil && tag.RowsAffected() == 0 {
		return fmt.Errorf("edge %s: %w", id, ErrNotFound)
	}
	return err
}

// UseNonce implements Store.
func (s *PGStore) UseNonce(ctx context.Context, edge, nonce string, expires, now time.Time) error {
	// An expired entry with the same nonce is replaced; a live one is a replay.
	tag, err := s.pool.Exec(ctx, `INSERT INTO nonces (edge, nonce, expires) VALUES ($1, $2, $3)
		ON CONFLICT (edge, nonce) DO UPDATE SET expires = EXCLUDED.expires WHERE nonces.expires <= $4`, edge, nonce, expires, now)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrReplay
	}
	if nonce[0] == 'A' { // about 1 call in 64: prune expired nonces
		_, _ = s.pool.Exec(ctx, "DELETE FROM nonces WHERE expires <= $1", now)
	}
	return nil
}

// Ingest implements Store.
func (s *PGStore) Ingest(ctx context.Context, edge, school string, recs []wire.Record, received time.Time) (IngestResult, error) {
	var res IngestResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		res = IngestResult{}
		var acked int64
		// The edge row lock serialises batches of one edge across replicas.
		if err := tx.QueryRow(ctx, "SELECT acked FROM edges WHERE id=$1 FOR UPDATE", edge).Scan(&acked); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("edge %s: %w", edge, ErrNotFound)
			}
			return err
		}
		res.Acked = uint64(acked)
		if len(recs) == 0 {
			return nil
		}
		if recs[0].Seq > res.Acked+1+wire.MaxAhead {
			return &GapError{Acked: res.Acked, First: recs[0].Seq}
		}
		n := len(recs)
		seqs, ids, kinds, ats := make([]int64, n), make([]string, n), make([]string, n), make([]int64, n)
		payloads := make([][]byte, n)
		for i, r := range recs {
			seqs[i], ids[i], kinds[i], ats[i], payloads[i] = int64(r.Seq), r.ID, r.Kind, r.At, r.Payload
		}
		tag, err := tx.Exec(ctx, `INSERT INTO records (edge, seq, id, school, kind, at, payload, received)
			SELECT $1, u.seq, u.id, $2, u.kind, u.at, u.payload, $3
			FROM unnest($4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::bytea[]) AS u(seq, id, kind, at, payload)
			ON CONFLICT (edge, seq) DO NOTHING`, edge, school, received, seqs, ids, kinds, ats, payloads)
		if err != nil {
			return err
		}
		res.Accepted = int(tag.RowsAffected())
		res.Dups = n - res.Accepted
		if res.Dups > 0 {
			// A seq held already must hold the same record.
			var bad int64
			err := tx.QueryRow(ctx, `SELECT count(*) FROM records r JOIN unnest($2::bigint[], $3::text[]) AS u(seq, id)
				ON r.seq = u.seq WHERE r.edge = $1 AND r.id <> u.id`, edge, seqs, ids).Scan(&bad)
			if err != nil {
				return err
			}
			if bad > 0 {
				return fmt.Errorf("edge %s: %d seq(s) of the batch: %w", edge, bad, ErrSeqConflict)
			}
		}
		if recs[0].Seq > res.Acked+1 || recs[n-1].Seq <= res.Acked {
			return nil // ahead of a gap, or all old: acked does not move
		}
		// This run joins the contiguous prefix; extend it over runs that
		// arrived ahead of it (at most MaxAhead records to look at).
		next := recs[n-1].Seq
		rows, err := tx.Query(ctx, "SELECT seq FROM records WHERE edge=$1 AND seq > $2 AND seq <= $3 ORDER BY seq", edge, int64(next), int64(next+wire.MaxAhead))
		if err != nil {
			return err
		}
		seqsAhead, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		for _, s := range seqsAhead {
			if uint64(s) != next+1 {
				break
			}
			next++
		}
		res.Acked = next
		_, err = tx.Exec(ctx, "UPDATE edges SET acked=$2 WHERE id=$1", edge, int64(next))
		return err
	})
	return res, err
}

// Records implements Store.
func (s *PGStore) Records(ctx context.Context, school string, fn func(StoredRecord) error) error {
	rows, err := s.pool.Query(ctx, "SELECT edge, seq, id, school, kind, at, payload, received FROM records WHERE school=$1 ORDER BY edge, seq", school)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r StoredRecord
		var seq int64
		var payload []byte
		if err := rows.Scan(&r.Edge, &seq, &r.ID, &r.School, &r.Kind, &r.At, &payload, &r.Received); err != nil {
			return err
		}
		r.Seq, r.Record.School, r.Payload = uint64(seq), r.School, payload
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// PutChange implements Store.
func (s *PGStore) PutChange(ctx context.Context, school, kind string, data []byte, now time.Time) (uint64, error) {
	var seq int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var code string
		if err := tx.QueryRow(ctx, "SELECT code FROM schools WHERE code=$1 FOR UPDATE", school).Scan(&code); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("school %s: %w", school, ErrNotFound)
			}
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(seq), 0) + 1 FROM changes WHERE school=$1", school).Scan(&seq); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO changes (school, seq, kind, data, created) VALUES ($1, $2, $3, $4, $5)", school, seq, kind, data, now)
		return err
	})
	return uint64(seq), err
}

// Changes implements Store.
func (s *PGStore) Changes(ctx context.Context, school string, since uint64, limit int) ([]Change, error) {
	rows, err := s.pool.Query(ctx, "SELECT seq, kind, created, data FROM changes WHERE school=$1 AND seq > $2 ORDER BY seq LIMIT $3", school, int64(since), limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Change, error) {
		var c Change
		var seq int64
		var data []byte
		err := r.Scan(&seq, &c.Kind, &c.Created, &data)
		c.Seq, c.Data = uint64(seq), data
		return c, err
	})
}
