package hub_test

import (
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/campusedge/campusedge/sync/hub"
	"github.com/campusedge/campusedge/sync/wire"
)

// TestStaffAccountsSessionsTokensNotes: accounts, sessions (expiry, delete),
// token listing and revocation and edge notes behave the same on both
// backends.
func TestStaffAccountsSessionsTokensNotes(t *testing.T) {
	backends(t, func(t *testing.T, st hub.Store) {
		now := time.Now().UTC().Truncate(time.Millisecond)
		a := hub.Account{User: "li", Role: hub.RoleSchoolAdmin, School: "s1", Hash: "$argon2id$x", Created: now}
		if err := st.PutAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
		a.Role = hub.RoleCityAdmin
		if err := st.PutAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
		got, err := st.Account(ctx, "li")
		if err != nil || got.Role != hub.RoleCityAdmin || got.Hash != a.Hash || got.School != "s1" {
			t.Fatalf("account %+v, %v; want replaced role", got, err)
		}
		if _, err := st.Account(ctx, "nobody"); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("unknown account: %v", err)
		}
		if as, _ := st.Accounts(ctx); len(as) != 1 {
			t.Fatalf("accounts %v", as)
		}
		h := sha256.Sum256([]byte("secret"))
		if err := st.CreateSession(ctx, hub.Session{Hash: h[:], User: "li", Kind: "cookie", Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if se, err := st.Session(ctx, h[:], now); err != nil || se.User != "li" || se.Kind != "cookie" {
			t.Fatalf("session %+v %v", se, err)
		}
		if _, err := st.Session(ctx, h[:], now.Add(2*time.Hour)); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("expired session: %v", err)
		}
		if err := st.DeleteSession(ctx, h[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Session(ctx, h[:], now); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("deleted session: %v", err)
		}

		mustEdge(t, st, "s1", "e1")
		toks, err := st.EnrolTokens(ctx, "s1")
		if err != nil || len(toks) != 1 || toks[0].UsedBy != "e1" {
			t.Fatalf("tokens %+v %v", toks, err)
		}
		th := sha256.Sum256([]byte("fresh"))
		if err := st.CreateEnrolToken(ctx, "s1", th[:], now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := st.RevokeEnrolToken(ctx, hub.TokenID(th[:])); err != nil {
			t.Fatal(err)
		}
		if err := st.RevokeEnrolToken(ctx, "00000000000000zz"); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("bad id: %v", err)
		}
		if _, err := st.Enrol(ctx, th[:], hub.Edge{ID: "e2", PublicKey: []byte("k2")}, now); !errors.Is(err, hub.ErrTokenInvalid) {
			t.Fatalf("enrol with revoked token: %v", err)
		}
		toks, _ = st.EnrolTokens(ctx, "")
		revoked := 0
		for _, tk := range toks {
			if tk.ID == hub.TokenID(th[:]) && tk.UsedBy == "(revoked)" {
				revoked++
			}
		}
		if len(toks) != 2 || revoked != 1 || toks[0].Expires.Before(toks[1].Expires) {
			t.Fatalf("tokens after revoke %+v", toks)
		}

		exp := now.Add(90 * 24 * time.Hour)
		if err := st.NoteEdge(ctx, "e1", hub.EdgeNote{Seen: now, Version: "v1.2"}); err != nil {
			t.Fatal(err)
		}
		if err := st.NoteEdge(ctx, "e1", hub.EdgeNote{CertNotAfter: exp}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Ingest(ctx, "e1", "s1", recs(1, 3, "r"), now); err != nil {
			t.Fatal(err)
		}
		e, err := st.Edge(ctx, "e1")
		if err != nil || !e.Seen.Equal(now) || e.Version != "v1.2" || !e.CertNotAfter.Equal(exp) || e.Acked != 3 {
			t.Fatalf("edge after notes %+v %v", e, err)
		}
		if !e.BacklogAt.IsZero() {
			t.Fatalf("an edge that never reported a backlog has one: %+v", e)
		}
		later := now.Add(time.Minute)
		if err := st.NoteEdge(ctx, "e1", hub.EdgeNote{Seen: later, Backlog: &wire.Backlog{Records: 42, Oldest: 90 * time.Second}}); err != nil {
			t.Fatal(err)
		}
		if err := st.NoteEdge(ctx, "e1", hub.EdgeNote{CertNotAfter: exp}); err != nil { // no backlog: kept
			t.Fatal(err)
		}
		if e, _ = st.Edge(ctx, "e1"); e.Backlog != 42 || e.BacklogOldest != 90 || !e.BacklogAt.Equal(later) || !e.Seen.Equal(later) {
			t.Fatalf("edge after a backlog report %+v", e)
		}
		if err := st.NoteEdge(ctx, "nope", hub.EdgeNote{Seen: now}); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("note unknown edge: %v", err)
		}
	})
}
