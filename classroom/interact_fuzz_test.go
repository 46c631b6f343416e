package classroom

import (
	"testing"

	"github.com/campusedge/campusedge/classroom/attendance"
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// FuzzDecodeInteract: quiz and attendance messages from any bytes decode to
// a valid message or an error, never a panic; what decodes satisfies the
// rules the handlers rely on.
func FuzzDecodeInteract(f *testing.F) {
	for _, s := range []string{
		`{"type":"quiz","v":1,"question":{"id":"q1","kind":"single","prompt":"2+2?","options":["3","4"],"correct":[1]}}`,
		`{"type":"quiz","v":1,"question":{"id":"q2","kind":"numeric","prompt":"g","answer":9.8,"tolerance":0.1,"seconds":30}}`,
		`{"type":"quiz","v":1,"question":{"id":"q3","kind":"multiple","prompt":"p","options":["a","b","c"],"correct":[0,2]}}`,
		`{"type":"quiz","v":1,"question":{"id":"q1","kind":"single","prompt":"x","options":["a"],"correct":[0]}}`,
		`{"type":"quiz","v":1,"question":null}`, `{"type":"quiz","v":1}`,
		`{"type":"quiz_answer","v":1,"quiz_id":"q1","choices":[1]}`,
		`{"type":"quiz_answer","v":1,"quiz_id":"q1","student_id":"s1","value":1e308}`,
		`{"type":"quiz_answer","v":1,"quiz_id":"","choices":[1,1,1,1,1,1,1,1,1,1,1,1]}`,
		`{"type":"quiz_close","v":1,"quiz_id":"q1"}`,
		`{"type":"roster","v":1}`, `{"type":"roster","v":1,"classroom_id":"c-1","group":"math-7-1"}`,
		`{"type":"mark","v":1,"student_id":"s1","status":"present"}`,
		`{"type":"mark","v":1,"student_id":"s1","status":"gone"}`, `{"type":"mark","v":1,"status":"late"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		hdr, err := ctlwire.Decode(data)
		if err != nil {
			return
		}
		m, err := decodeInteract(hdr, data)
		if err != nil {
			if m != nil {
				t.Fatal("decodeInteract returned a message with an error")
			}
			return
		}
		switch v := m.(type) {
		case *quizPushed:
			if err := v.q.Validate(); err != nil {
				t.Fatalf("pushed question invalid: %v", err)
			}
		case *QuizAnswer:
			if v.QuizID == "" || len(v.QuizID) > 64 || len(v.Choices) > 10 {
				t.Fatalf("answer passed: %+v", v)
			}
		case *QuizClose:
			if v.QuizID == "" {
				t.Fatal("close without quiz id")
			}
		case *Mark:
			if !attendance.ValidStatus(v.Status) || v.Student == "" {
				t.Fatalf("mark passed: %+v", v)
			}
		case *RosterRequest:
		default:
			t.Fatalf("unexpected %T", m)
		}
	})
}
