package cityadmin

import (
	"errors"
	"net/http"
	"os"
	"time"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/catalog"
	"github.com/campusedge/campusedge/sync/hub"
)

// Reviews is the queue of school uploads waiting for city staff to
// publish or reject them (catalog.Store).
type Reviews interface {
	Submissions(state, school string, limit int) ([]catalog.Submission, error)
	Submission(id string) (catalog.Submission, error)
	Decide(id string, d catalog.Decision) (catalog.Submission, error)
	BlobRoot() string
}

// maxSubmissions is how many submissions one listing returns.
const maxSubmissions = 2000

// visible reports whether p may see submissions of school: city admins
// and content editors see every school's, a school admin only theirs.
func visible(p Principal, school string) bool {
	return p.Role == hub.RoleContentEditor || p.can(school)
}

func (a *API) listUploads(w http.ResponseWriter, r *http.Request, p Principal) {
	if a.rev == nil {
		httpapi.WriteError(w, http.StatusNotImplemented, "no_catalogue", "this hub serves no catalogue")
		return
	}
	state := r.URL.Query().Get("state")
	switch state {
	case "", catalog.SubmissionPending, catalog.SubmissionPublished, catalog.SubmissionRejected:
	default:
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_state", "state is pending, published or rejected (or absent for all)")
		return
	}
	school := r.URL.Query().Get("school")
	if p.Role == hub.RoleSchoolAdmin {
		if school != "" && school != p.School {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", "no school "+school+" among yours")
			return
		}
		school = p.School
	}
	subs, err := a.rev.Submissions(state, school, maxSubmissions)
	if err != nil {
		a.storeErr(w, "uploads", err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"uploads": subs, "review": a.review})
}

// submission reads {id} and checks p may see it; it has answered when ok
// is false. Another school's upload is 404 to a school admin.
func (a *API) submission(w http.ResponseWriter, r *http.Request, p Principal) (catalog.Submission, bool) {
	if a.rev == nil {
		httpapi.WriteError(w, http.StatusNotImplemented, "no_catalogue", "this hub serves no catalogue")
		return catalog.Submission{}, false
	}
	id := r.PathValue("id")
	sub, err := a.rev.Submission(id)
	if err == nil && !visible(p, sub.School) {
		err = catalog.ErrNotFound
	}
	if errors.Is(err, catalog.ErrNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, "not_found", "no upload "+id+" awaiting review")
		return sub, false
	} else if err != nil {
		a.storeErr(w, "upload "+id, err)
		return sub, false
	}
	return sub, true
}

// uploadContent serves a submission's bytes so a reviewer can look before
// publishing; the headers are the catalogue's (media.SetServeHeaders), so
// a document is a download, never a page of the console's origin.
func (a *API) uploadContent(w http.ResponseWriter, r *http.Request, p Principal) {
	sub, ok := a.submission(w, r, p)
	if !ok {
		return
	}
	f, err := os.Open(media.BlobPath(a.rev.BlobRoot(), sub.Item.SHA256))
	if err != nil {
		httpapi.WriteError(w, http.StatusNotFound, "blob_missing", "the bytes of "+sub.Item.ID+" are not on this hub")
		return
	}
	defer f.Close()
	media.SetServeHeaders(w.Header(), sub.Item)
	w.Header().Set("Content-Security-Policy", "sandbox")
	http.ServeContent(w, r, "", time.Time{}, f)
}

// DecisionRequest publishes (with the catalogue fields) or rejects (with
// a reason) an upload.
type DecisionRequest struct {
	Title   string `json:"title"`
	Subject string `json:"subject"`
	Grade   string `json:"grade"`
	Reason  string `json:"reason"`
}

func (a *API) decideUpload(publish bool) func(http.ResponseWriter, *http.Request, Principal) {
	return func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req DecisionRequest
		if !httpapi.DecodeJSON(w, r, maxJSONBody, &req) {
			return
		}
		if _, ok := a.submission(w, r, p); !ok {
			return
		}
		id := r.PathValue("id")
		sub, err := a.rev.Decide(id, catalog.Decision{Publish: publish, Title: req.Title, Subject: req.Subject, Grade: req.Grade,
			Reason: req.Reason, Reviewer: p.User, At: a.now()})
		switch {
		case errors.Is(err, media.ErrInvalid):
			httpapi.WriteError(w, http.StatusBadRequest, "invalid_decision", err.Error())
			return
		case errors.Is(err, catalog.ErrDecided):
			httpapi.WriteError(w, http.StatusConflict, "already_decided", err.Error())
			return
		case err != nil:
			a.storeErr(w, "upload "+id, err)
			return
		}
		a.log.Info("school upload reviewed", "id", id, "school", sub.School, "state", sub.State, "by", p.User)
		httpapi.WriteJSON(w, http.StatusOK, sub)
	}
}
