package httpapi

import "context"

// Caller is who an authenticated request comes from, as the server's
// credential check found it: an enrolled edge (by its signature) or city
// staff (by a staff credential). Handlers that scope what they do by the
// caller (a firmware report is about the calling edge only) read it with
// CallerFrom; the check puts it in with WithCaller.
type Caller struct {
	Edge   string // the enrolled edge's id; empty for staff
	School string // the edge's school; empty for staff
	Staff  bool   // city staff: may act for any edge or school
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller a credential check put in ctx; ok is false
// when no check ran (a handler mounted without one).
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
