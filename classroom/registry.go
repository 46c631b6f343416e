package classroom

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/edge/ctlwire"
)

// The control messages a client may send, each declared once: who may
// send it, how its body is decoded and checked, and what handles it.
// Decoding, the role check and dispatch all read this table, so a new
// message is one row here plus its type (messages*.go) and its handler.
// The wire format is docs/LIVE.md's; the table only says where each
// message goes.
var messages = map[string]msgSpec{
	TypeJoin:      classMsg(everyone, strict[Join], (*participant).join),
	TypeLeave:     classMsg(everyone, strict[Leave], (*participant).leave),
	TypePublish:   classMsg(publishers, strict[Publish], (*participant).publish),
	TypeSubscribe: classMsg(everyone, strict[Subscribe], (*participant).subscribe),
	TypeAnswer:    classMsg(everyone, strict[SDPMessage], (*participant).answer),
	TypeCandidate: classMsg(everyone, strict[Candidate], (*participant).candidate),
	TypeHand:      classMsg(classrooms, strict[Hand], (*participant).hand), // master only lowers
	TypeStage:     classMsg(master, strict[Stage], (*participant).stage),
	TypeMute:      classMsg(teachers, strict[Mute], (*participant).mute), // assistant: own classroom only
	TypeEnd:       classMsg(master, strict[End], (*participant).end),
	// Quizzes and attendance (interact.go).
	TypeQuiz:       interactMsg(teachers, decodeQuizPush, (*interaction).pushQuiz), // assistant: to own classroom
	TypeQuizAnswer: interactMsg(answerers, strict[QuizAnswer], (*interaction).answerQuiz),
	TypeQuizClose:  interactMsg(teachers, strict[QuizClose], (*interaction).closeQuizRequest),
	TypeQuizReveal: interactMsg(teachers, strict[QuizReveal], (*interaction).revealQuiz),
	TypeRoster:     interactMsg(teachers, strict[RosterRequest], (*interaction).sendRoster), // names: never to the big screen
	TypeMark:       interactMsg(teachers, strict[Mark], (*interaction).mark),
}

// Who may send what (anything else is refused with "forbidden").
var (
	everyone   = []session.Role{session.RoleMaster, session.RoleAssistant, session.RoleTerminal, session.RoleObserver}
	classrooms = []session.Role{session.RoleMaster, session.RoleAssistant, session.RoleTerminal}
	publishers = []session.Role{session.RoleMaster, session.RoleTerminal}
	teachers   = []session.Role{session.RoleMaster, session.RoleAssistant}
	master     = []session.Role{session.RoleMaster}
	// answerers: a terminal answers for the room, an assistant for the
	// room or one student.
	answerers = []session.Role{session.RoleAssistant, session.RoleTerminal}
)

// msgSpec is one client → edge message type.
type msgSpec struct {
	roles []session.Role
	// interactive marks the quiz and attendance messages (interact.go).
	interactive bool
	// decode reads the body strictly and checks its fields; the header has
	// passed ctlwire.Decode.
	decode func(data []byte) (any, error)
	// handle runs a permitted request of a joined participant, with p.mu
	// held; a *ctlError becomes the error the client gets.
	handle func(p *participant, hdr ctlwire.Header, msg any) error
}

// checked is a message type that checks its own fields beyond what the
// JSON decoder does.
type checked interface{ check() error }

// strict decodes a body into an M and checks it.
func strict[M any, PM interface {
	*M
	checked
}](data []byte) (*M, error) {
	m := PM(new(M))
	if err := ctlwire.DecodeBody(data, m); err != nil {
		return nil, err
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}

// classMsg declares a class-control message (control.go) handled by the
// participant that sent it.
func classMsg[M any](roles []session.Role, decode func([]byte) (*M, error), handle func(*participant, ctlwire.Header, *M) error) msgSpec {
	return msgSpec{roles: roles,
		decode: func(data []byte) (any, error) { return nilOnError(decode(data)) },
		handle: func(p *participant, hdr ctlwire.Header, msg any) error { return handle(p, hdr, msg.(*M)) },
	}
}

// interactMsg declares a quiz or attendance message, handled by the
// session's interaction state.
func interactMsg[M any](roles []session.Role, decode func([]byte) (*M, error), handle func(*interaction, *participant, ctlwire.Header, *M) error) msgSpec {
	return msgSpec{roles: roles, interactive: true,
		decode: func(data []byte) (any, error) { return nilOnError(decode(data)) },
		handle: func(p *participant, hdr ctlwire.Header, msg any) error {
			return handle(p.ctl.interaction, p, hdr, msg.(*M))
		},
	}
}

// nilOnError keeps a typed nil pointer out of the any an error goes with.
func nilOnError[M any](m *M, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return m, nil
}

var errUnknownType = fmt.Errorf("unknown message type")

// decodeMessage decodes one client → edge message strictly and validates
// its fields. The header has passed ctlwire.Decode.
func decodeMessage(hdr ctlwire.Header, data []byte) (any, error) {
	spec, ok := messages[hdr.Type]
	if !ok {
		return nil, fmt.Errorf("%w: message type %q is not part of live classes v%d", errUnknownType, hdr.Type, ctlwire.Version)
	}
	return spec.decode(data)
}

// decodeInteract decodes the quiz and attendance messages only;
// errUnknownType for anything else.
func decodeInteract(hdr ctlwire.Header, data []byte) (any, error) {
	if spec, ok := messages[hdr.Type]; !ok || !spec.interactive {
		return nil, fmt.Errorf("%w: message type %q is not part of live classes v%d", errUnknownType, hdr.Type, ctlwire.Version)
	}
	return decodeMessage(hdr, data)
}

// validate checks a decoded message's fields again (what decodeMessage
// already did; the fuzz test holds it to that).
func validate(v any) error {
	if c, ok := v.(checked); ok {
		return c.check()
	}
	return nil
}

// allowedHint lists what a role may send, for the "forbidden" error.
func allowedHint(r session.Role) string {
	var can []string
	for t, spec := range messages {
		if slices.Contains(spec.roles, r) {
			can = append(can, t)
		}
	}
	sort.Strings(can)
	return "this role may send: " + strings.Join(can, ", ")
}
