package hub

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgStaffSchema is the part of the schema this file uses; additive.
const pgStaffSchema = `
ALTER TABLE edges ADD COLUMN IF NOT EXISTS seen timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE edges ADD COLUMN IF NOT EXISTS version text NOT NULL DEFAULT '';
ALTER TABLE edges ADD COLUMN IF NOT EXISTS cert_not_after timestamptz NOT NULL DEFAULT 'epoch';
ALTER TABLE edges ADD COLUMN IF NOT EXISTS backlog bigint NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN IF NOT EXISTS backlog_oldest bigint NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN IF NOT EXISTS backlog_at timestamptz NOT NULL DEFAULT 'epoch';
CREATE TABLE IF NOT EXISTS accounts (
	username text PRIMARY KEY, role text NOT NULL, school text NOT NULL DEFAULT '', hash text NOT NULL,
	created timestamptz NOT NULL, disabled boolean NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS sessions (
	hash bytea PRIMARY KEY, username text NOT NULL, kind text NOT NULL, expires timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);
`

// epoch is how PostgreSQL holds "never" for the edge times; it reads back
// as the zero time.
var epoch = time.Unix(0, 0).UTC()

func zeroEpoch(t time.Time) time.Time {
	if !t.After(epoch) {
		return time.Time{}
	}
	return t.UTC()
}

// NoteEdge implements Store.
func (s *PGStore) NoteEdge(ctx context.Context, id string, n EdgeNote) error {
	var backlogAt *time.Time
	var backlog, oldest int64
	if n.Backlog != nil && !n.Seen.IsZero() {
		backlogAt, backlog, oldest = nullTime(n.Seen), int64(n.Backlog.Records), int64(n.Backlog.Oldest/time.Second)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE edges SET
		seen = CASE WHEN $2::timestamptz IS NULL THEN seen ELSE $2 END,
		version = CASE WHEN $3 = '' THEN version ELSE $3 END,
		cert_not_after = CASE WHEN $4::timestamptz IS NULL THEN cert_not_after ELSE $4 END,
		backlog = CASE WHEN $5::timestamptz IS NULL THEN backlog ELSE $6 END,
		backlog_oldest = CASE WHEN $5::timestamptz IS NULL THEN backlog_oldest ELSE $7 END,
		backlog_at = CASE WHEN $5::timestamptz IS NULL THEN backlog_at ELSE $5 END
		WHERE id = $1`, id, nullTime(n.Seen), n.Version, nullTime(n.CertNotAfter), backlogAt, backlog, oldest)
	if err == nil && tag.RowsAffected() == 0 {
		return fmt.Errorf("edge %s: %w", id, ErrNotFound)
	}
	return err
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// EnrolTokens implements Store.
func (s *PGStore) EnrolTokens(ctx context.Context, school string) ([]EnrolToken, error) {
	rows, err := s.pool.Query(ctx, "SELECT hash, school, expires, COALESCE(used_by, '') FROM enrol_tokens WHERE $1 = '' OR school = $1 ORDER BY expires DESC", school)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (EnrolToken, error) {
		var t EnrolToken
		var h []byte
		err := r.Scan(&h, &t.School, &t.Expires, &t.UsedBy)
		t.ID = TokenID(h)
		return t, err
	})
}

// RevokeEnrolToken implements Store.
func (s *PGStore) RevokeEnrolToken(ctx context.Context, id string) error {
	prefix, err := hex.DecodeString(id)
	if err != nil || len(prefix) != 8 {
		return fmt.Errorf("token %q: %w", id, ErrNotFound)
	}
	tag, err := s.pool.Exec(ctx, "UPDATE enrol_tokens SET used_by = COALESCE(used_by, $2) WHERE substring(hash from 1 for 8) = $1", prefix, revokedBy)
	if err == nil && tag.RowsAffected() == 0 {
		return fmt.Errorf("token %s: %w", id, ErrNotFound)
	}
	return err
}

// PutAccount implements Store.
func (s *PGStore) PutAccount(ctx context.Context, a Account) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO accounts (username, role, school, hash, created, disabled) VALUES ($1,$2,$3,$4,$5,$6)
		ON CONFLICT (username) DO UPDATE SET role=$2, school=$3, hash=$4, disabled=$6`, a.User, a.Role, a.School, a.Hash, a.Created, a.Disabled)
	return err
}

const accountCols = "username, role, school, hash, created, disabled"

func scanAccount(r pgx.Row) (Account, error) {
	var a Account
	err := r.Scan(&a.User, &a.Role, &a.School, &a.Hash, &a.Created, &a.Disabled)
	return a, err
}

// Account implements Store.
func (s *PGStore) Account(ctx context.Context, user string) (Account, error) {
	a, err := scanAccount(s.pool.QueryRow(ctx, "SELECT "+accountCols+" FROM accounts WHERE username=$1", user))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, ErrNotFound
	}
	return a, err
}

// Accounts implements Store.
func (s *PGStore) Accounts(ctx context.Context) ([]Account, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+accountCols+" FROM accounts ORDER BY username")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Account, error) { return scanAccount(r) })
}

// CreateSession implements Store; expired sessions are dropped on the way.
func (s *PGStore) CreateSession(ctx context.Context, se Session) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM sessions WHERE expires < now()"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO sessions (hash, username, kind, expires) VALUES ($1,$2,$3,$4)", se.Hash, se.User, se.Kind, se.Expires)
		return err
	})
}

// Session implements Store.
func (s *PGStore) Session(ctx context.Context, hash []byte, now time.Time) (Session, error) {
	se := Session{Hash: hash}
	err := s.pool.QueryRow(ctx, "SELECT username, kind, expires FROM sessions WHERE hash=$1 AND expires > $2", hash, now).Scan(&se.User, &se.Kind, &se.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return se, ErrNotFound
	}
	return se, err
}

// DeleteSession implements Store.
func (s *PGStore) DeleteSession(ctx context.Context, hash []byte) error {
	_, err := s.pool.Exec(ctx, "DELETE FROM sessions WHERE hash=$1", hash)
	return err
}
