package catalog

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/media"
)

// Review of school uploads. With review on (HandlerOptions.Review), a
// verified upload does not enter the catalogue at once: it waits as a
// Submission until city staff publish it (with the title, subject and
// grade they settle on) or reject it with a reason. Until then edges
// neither list nor fetch it; its bytes are already in the blob store, so
// publishing moves nothing.

// Submission states.
const (
	SubmissionPending   = "pending"
	SubmissionPublished = "published"
	SubmissionRejected  = "rejected"
)

// MaxReasonLen bounds a rejection reason.
const MaxReasonLen = 500

// ErrDecided is returned when a submission was already published or
// rejected.
var ErrDecided = errors.New("already decided")

// Submission is a school's upload as the city reviews it.
type Submission struct {
	Item     media.Item `json:"item"`
	Edge     string     `json:"edge,omitempty"`
	School   string     `json:"school,omitempty"`
	Received time.Time  `json:"received"`
	State    string     `json:"state"`
	Reason   string     `json:"reason,omitempty"`
	Reviewer string     `json:"reviewer,omitempty"`
	Decided  time.Time  `json:"decided,omitzero"`
}

// Submit records a verified upload as waiting for review, unless the
// same id is already submitted or catalogued (the same bytes are the same
// item, whoever sent them first).
func (s *Store) Submit(sub Submission) error {
	sub.Item.Seq = 0
	if err := sub.Item.Validate(); err != nil {
		return err
	}
	sub.State, sub.Reason, sub.Reviewer, sub.Decided = SubmissionPending, "", "", time.Time{}
	sub.Received = sub.Received.UTC()
	return s.meta.submit(sub)
}

// Submitted reports whether id waits for review or was reviewed.
func (s *Store) Submitted(id string) bool { return s.meta.submitted(id) }

// Submission returns the submission with id.
func (s *Store) Submission(id string) (Submission, error) { return s.meta.submission(id) }

// Submissions lists the submissions in state ("" for all) of school (""
// for every school), oldest first, at most limit (0: all).
func (s *Store) Submissions(state, school string, limit int) ([]Submission, error) {
	return s.meta.submissions(state, school, limit)
}

// Decision is a reviewer's verdict on a submission. Publishing takes the
// reviewer's title, subject and grade (empty title keeps the school's).
type Decision struct {
	Publish  bool
	Title    string
	Subject  string
	Grade    string
	Reason   string // required to reject
	Reviewer string
	At       time.Time
}

// Decide publishes or rejects a pending submission. Publishing records the
// item in the catalogue in the same transaction, so edges see it on their
// next catalogue pull and the submission cannot be published twice.
func (s *Store) Decide(id string, d Decision) (Submission, error) {
	d.Reason = strings.TrimSpace(d.Reason)
	if !d.Publish && (d.Reason == "" || len(d.Reason) > MaxReasonLen) {
		return Submission{}, fmt.Errorf("%w: a rejection needs a reason of 1-%d bytes (the school sees it)", media.ErrInvalid, MaxReasonLen)
	}
	sub, err := s.meta.decide(id, func(sub *Submission) (*media.Item, error) {
		if sub.State != SubmissionPending {
			return nil, fmt.Errorf("%w: upload %s was %s by %s", ErrDecided, id, sub.State, sub.Reviewer)
		}
		sub.Reviewer, sub.Decided = d.Reviewer, d.At.UTC()
		if !d.Publish {
			sub.State, sub.Reason = SubmissionRejected, d.Reason
			return nil, nil
		}
		it := sub.Item
		if t := strings.TrimSpace(d.Title); t != "" {
			it.Title = t
		}
		it.Subject, it.Grade, it.Seq = strings.TrimSpace(d.Subject), strings.TrimSpace(d.Grade), 0
		if err := it.Validate(); err != nil {
			return nil, err
		}
		sub.State = SubmissionPublished
		return &it, nil
	})
	if err != nil {
		return Submission{}, fmt.Errorf("review %s: %w", id, err)
	}
	return sub, nil
}

// filterSubmissions keeps the submissions in state of school, oldest
// first, at most limit (0: all).
func filterSubmissions(all []Submission, state, school string, limit int) []Submission {
	out := []Submission{}
	for _, sub := range all {
		if (state == "" || sub.State == state) && (school == "" || sub.School == school) {
			out = append(out, sub)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Received.Before(out[j].Received) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}
