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
	TypeLinks     = "links"     // edge → master: each classroom's link (layer, weak) when it changes
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
	// Screen lists the track ids (the msid's second part) of the offer's
	// screen shares: when a classroom's link is thin the edge gives them
	// its budget before the camera's (docs/LIVE.md, "Layers").
	Screen []string `json:"screen,omitempty"`
}

// Limits of Publish.Screen.
const (
	maxScreens     = 4
	maxTrackIDSize = 128
)

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
	// Layers: the edge chooses a simulcast layer per subscriber, so a
	// publisher should send its video as layers (rid); false, every
	// subscriber gets the top layer and one encoding is enough.
	Layers bool `json:"layers,omitempty"`
	// SVC: the edge forwards a VP9 SVC track (scalabilityMode L3T3_KEY
	// or L3T3, one SSRC) by layer, each subscriber the spatial and
	// temporal layers its link carries, so a publisher that can encode
	// it may send that instead of simulcast.
	SVC bool `json:"svc,omitempty"`
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

// Links tells the master teacher how each classroom's link carries the
// lesson (its subscriber's layer and estimate), sent when a classroom's
// layer or weak mark changes.
type Links struct {
	ctlwire.Header
	Classrooms []RoomLink `json:"classrooms"`
}

// RoomLink is one classroom's link as the edge's layer chooser sees it.
type RoomLink struct {
	Classroom string `json:"classroom_id"`
	// Layer is the simulcast layer it receives (0 the lowest) of Layers;
	// -1 when the lesson has no layers.
	Layer  int `json:"layer"`
	Layers int `json:"layers"`
	// BudgetBPS is what its link was shown to carry (0: not yet known);
	// Loss its recent loss ratio.
	BudgetBPS int64   `json:"budget_bps"`
	Loss      float64 `json:"loss"`
	// Weak: the room has been below the top layer for a while, or its
	// video is paused: the teacher page marks it "low quality — weak link".
	Weak        bool `json:"weak"`
	VideoPaused bool `json:"video_paused"`
}

// Ended tells participants the class is over.
type Ended struct{ ctlwire.Header }

// Field checks of the client → edge messages (msgSpec's decode runs them
// after the strict JSON decode).

func (m *Join) check() error {
	if len([]rune(m.Name)) > maxNameRunes {
		return malformed("name longer than %d characters", maxNameRunes)
	}
	return nil
}

func (*Leave) check() error     { return nil }
func (*Subscribe) check() error { return nil }
func (*End) check() error       { return nil }
func (m *Publish) check() error {
	if len(m.Screen) > maxScreens {
		return malformed("more than %d screen tracks", maxScreens)
	}
	for _, id := range m.Screen {
		if id == "" || len(id) > maxTrackIDSize {
			return malformed("a screen track id must be 1 to %d bytes", maxTrackIDSize)
		}
	}
	return checkSDP(m.SDP)
}

func (m *SDPMessage) check() error {
	if m.PC != PCSubscribe {
		return malformed(`an answer from the client is for pc "subscribe"`)
	}
	return checkSDP(m.SDP)
}

func (m *Candidate) check() error {
	if m.PC != PCPublish && m.PC != PCSubscribe {
		return malformed(`pc must be "publish" or "subscribe"`)
	}
	if len(m.Candidate) > maxCandidate {
		return malformed("candidate longer than %d bytes", maxCandidate)
	}
	if m.SDPMid != nil && len(*m.SDPMid) > 32 {
		return malformed("sdpMid longer than 32 bytes")
	}
	return nil
}

func (m *Hand) check() error  { return checkClassroom(m.Classroom, false) }
func (m *Stage) check() error { return checkClassroom(m.Classroom, true) }
func (m *Mute) check() error  { return checkClassroom(m.Classroom, true) }

// malformed is a field error: the client gets "bad_message".
func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ctlwire.ErrMalformed, fmt.Sprintf(format, a...))
}

func checkSDP(s string) error {
	if !strings.HasPrefix(s, "v=0") {
		return malformed("sdp must be an SDP description starting with v=0")
	}
	if len(s) > maxSDPBytes {
		return malformed("sdp longer than %d bytes", maxSDPBytes)
	}
	return nil
}

func checkClassroom(c string, required bool) error {
	if c == "" && required {
		return malformed("classroom_id is required")
	}
	if len(c) > 64 {
		return malformed("classroom_id longer than 64 bytes")
	}
	return nil
}
