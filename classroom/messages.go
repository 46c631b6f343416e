package classroom

import (
	"fmt"
	"strings"

	"github.com/campusedge/campusedge/edge/ctlwire"
)

// Control-channel message types of live classes (protocol v1, see
// docs/LIVE.md). Client → edge unless marked.
const (
	TypeJoin      = "join"      // enter the class
	TypeLeave     = "leave"     // leave it (the connection stays open)
	TypePublish   = "publish"   // SDP offer to send media; again on the same connection to renegotiate
	TypeSubscribe = "subscribe" // ask to receive media; the edge then sends offers
	TypeOffer     = "offer"     // edge → client: SDP offer for the subscribe connection
	TypeAnswer    = "answer"    // both ways: SDP answer (edge → client for publish, client → edge for subscribe)
	TypeCandidate = "candidate" // client → edge: trickled ICE candidate
	TypeHand      = "hand"      // raise or lower the classroom's hand
	TypeStage     = "stage"     // master: invite a classroom on stage, or back
	TypeMute      = "mute"      // mute or unmute a classroom's audio
	TypeEnd       = "end"       // master: end the class
	TypeAck       = "ack"       // edge → client: a control request was done
	TypeState     = "state"     // edge → client: the class as it is now (after every change)
	TypeEnded     = "ended"     // edge → client: the session has ended; the edge closes the connection
)

// Peer-connection names in offer/answer/candidate messages.
const (
	PCPublish   = "publish"
	PCSubscribe = "subscribe"
)

// Limits on fields, beyond the 64 KiB message limit.
const (
	maxNameRunes = 80
	maxSDPBytes  = 60 << 10
	maxCandidate = 1024
)

// Join enters the class. Name is shown to others (optional).
type Join struct {
	ctlwire.Header
	Name string `json:"name,omitempty"`
}

// Leave leaves the class.
type Leave struct{ ctlwire.Header }

// Publish carries an SDP offer for the publish connection.
type Publish struct {
	ctlwire.Header
	SDP string `json:"sdp"`
}

// Subscribe asks the edge to send media.
type Subscribe struct{ ctlwire.Header }

// SDPMessage is an offer or answer for one of the two connections.
type SDPMessage struct {
	ctlwire.Header
	PC  string `json:"pc"`
	SDP string `json:"sdp"`
}

// Candidate is one trickled ICE candidate (RTCIceCandidateInit's fields).
type Candidate struct {
	ctlwire.Header
	PC            string  `json:"pc"`
	Candidate     string  `json:"candidate"`
	SDPMid        *string `json:"sdpMid,omitempty"`
	SDPMLineIndex *uint16 `json:"sdpMLineIndex,omitempty"`
}

// Hand raises (true) or lowers (false) the sender's classroom's hand. The
// master lowers any classroom's hand by naming it.
type Hand struct {
	ctlwire.Header
	Raised    bool   `json:"raised"`
	Classroom string `json:"classroom_id,omitempty"`
}

// Stage puts Classroom on stage (On true) or back (On false).
type Stage struct {
	ctlwire.Header
	Classroom string `json:"classroom_id"`
	On        bool   `json:"on"`
}

// Mute mutes or unmutes Classroom's audio for everybody.
type Mute struct {
	ctlwire.Header
	Classroom string `json:"classroom_id"`
	Muted     bool   `json:"muted"`
}

// End ends the class.
type End struct{ ctlwire.Header }

// Ack answers a control request by its id.
type Ack struct {
	ctlwire.Header
	For string `json:"for"` // the request's type
}

// Welcome answers the hello of a session token.
type Welcome struct {
	ctlwire.Header
	Role             string `json:"role"`
	SessionID        string `json:"session_id"`
	Classroom        string `json:"classroom_id,omitempty"`
	ParticipantID    string `json:"participant_id"`
	EdgeID           string `json:"edge_id,omitempty"`
	HeartbeatSeconds int    `json:"heartbeat_s"`
}

// Participant is one joined connection as others see it.
type Participant struct {
	ID         string `json:"id"`
	Role       string `json:"role"`
	Classroom  string `json:"classroom_id,omitempty"`
	Name       string `json:"name,omitempty"`
	Publishing bool   `json:"publishing"`
}

// State is the whole class, sent to every joined participant after each
// change (small: at most ~100 classrooms).
type State struct {
	ctlwire.Header
	SessionID    string        `json:"session_id"`
	Title        string        `json:"title"`
	SessionState string        `json:"session_state"`
	Participants []Participant `json:"participants"`
	Hands        []string      `json:"hands"`
	Stage        string        `json:"stage"`
	Muted        []string      `json:"muted"`
}

// Ended tells participants the class is over.
type Ended struct{ ctlwire.Header }

// decodeMessage decodes one client → edge message strictly and validates
// its fields. The header has passed ctlwire.Decode.
func decodeMessage(hdr ctlwire.Header, data []byte) (any, error) {
	var v any
	switch hdr.Type {
	case TypeJoin:
		v = &Join{}
	case TypeLeave:
		v = &Leave{}
	case TypePublish:
		v = &Publish{}
	case TypeSubscribe:
		v = &Subscribe{}
	case TypeAnswer:
		v = &SDPMessage{}
	case TypeCandidate:
		v = &Candidate{}
	case TypeHand:
		v = &Hand{}
	case TypeStage:
		v = &Stage{}
	case TypeMute:
		v = &Mute{}
	case TypeEnd:
		v = &End{}
	default:
		return decodeInteract(hdr, data) // interact.go: quizzes, attendance
	}
	if err := ctlwire.DecodeBody(data, v); err != nil {
		return nil, err
	}
	if err := validate(v); err != nil {
		return nil, err
	}
	return v, nil
}

var errUnknownType = fmt.Errorf("unknown message type")

func validate(v any) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ctlwire.ErrMalformed, fmt.Sprintf(format, a...))
	}
	checkSDP := func(s string) error {
		if !strings.HasPrefix(s, "v=0") {
			return bad("sdp must be an SDP description starting with v=0")
		}
		if len(s) > maxSDPBytes {
			return bad("sdp longer than %d bytes", maxSDPBytes)
		}
		return nil
	}
	checkClassroom := func(c string, required bool) error {
		if c == "" && required {
			return bad("classroom_id is required")
		}
		if len(c) > 64 {
			return bad("classroom_id longer than 64 bytes")
		}
		return nil
	}
	switch m := v.(type) {
	case *Join:
		if len([]rune(m.Name)) > maxNameRunes {
			return bad("name longer than %d characters", maxNameRunes)
		}
	case *Publish:
		return checkSDP(m.SDP)
	case *SDPMessage:
		if m.PC != PCSubscribe {
			return bad(`an answer from the client is for pc "subscribe"`)
		}
		return checkSDP(m.SDP)
	case *Candidate:
		if m.PC != PCPublish && m.PC != PCSubscribe {
			return bad(`pc must be "publish" or "subscribe"`)
		}
		if len(m.Candidate) > maxCandidate {
			return bad("candidate longer than %d bytes", maxCandidate)
		}
		if m.SDPMid != nil && len(*m.SDPMid) > 32 {
			return bad("sdpMid longer than 32 bytes")
		}
	case *Hand:
		return checkClassroom(m.Classroom, false)
	case *Stage:
		return checkClassroom(m.Classroom, true)
	case *Mute:
		return checkClassroom(m.Classroom, true)
	}
	return nil
}
