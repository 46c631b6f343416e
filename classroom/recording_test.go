package classroom_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/at-wat/ebml-go/mkvcore"
	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/edge/metricstest"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// recPublisher is a pion peer that WHIPs a known VP8 + Opus stream at real
// pace: 30 frames/s, each frame in two RTP packets (so the recorder must
// reassemble), a keyframe first and on every PLI; Opus every 20 ms. It
// keeps every frame and audio payload it sent, in order.
type recPublisher struct {
	pc   *webrtc.PeerConnection
	mu   sync.Mutex
	vid  [][]byte // VP8 frames (without the payload descriptor)
	key  []bool
	aud  [][]byte
	plis int
	stop context.CancelFunc
	done chan struct{}
}

// vp8Frame is frame n: a VP8 frame header (keyframes carry the start code
// and 320x240) followed by bytes derived from n.
func vp8Frame(n int, key bool) []byte {
	var f []byte
	if key {
		f = []byte{0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}
	} else {
		f = []byte{0x01, 0x00, 0x00}
	}
	f = binary.BigEndian.AppendUint32(f, uint32(n))
	for i := range 900 {
		f = append(f, byte((n*7+i)%253))
	}
	return f
}

func publishKnown(t *testing.T, ctx context.Context, e *edge, sessionID, token string) *recPublisher {
	t.Helper()
	pc, err := mediatest.LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	video, audio, tr := mediatest.SendTracks(t, pc, webrtc.MimeTypeVP8, "")
	p := &recPublisher{pc: pc, done: make(chan struct{})}
	needKey := make(chan struct{}, 1)
	go func() {
		for {
			pkts, _, err := tr.Sender().ReadRTCP()
			if err != nil {
				return
			}
			for _, pk := range pkts {
				if _, ok := pk.(*rtcp.PictureLossIndication); ok {
					p.mu.Lock()
					p.plis++
					p.mu.Unlock()
					select {
					case needKey <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	resp, body := e.Do(t, ctx, "POST", "/whip/"+sessionID, token, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHIP: %d %s", resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the publisher to connect", func() bool { return pc.ConnectionState() == webrtc.PeerConnectionStateConnected })
	sendCtx, stop := context.WithCancel(ctx)
	p.stop = stop
	t.Cleanup(stop)
	go func() {
		defer close(p.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var seq, aseq uint16
		start := time.Now()
		frames, auds := 0, 0
		for {
			select {
			case <-sendCtx.Done():
				return
			case <-tick.C:
			}
			el := time.Since(start)
			for ; auds <= int(el/(20*time.Millisecond)); auds++ {
				pl := []byte{0xfc, 0xff, 0xfe, byte(auds), byte(auds >> 8)}
				p.mu.Lock()
				p.aud = append(p.aud, pl)
				p.mu.Unlock()
				_ = audio.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: aseq, Timestamp: uint32(auds * 960)}, Payload: pl})
				aseq++
			}
			for ; frames <= int(el*30/time.Second); frames++ {
				key := frames == 0
				select {
				case <-needKey:
					key = true
				default:
				}
				f := vp8Frame(frames, key)
				p.mu.Lock()
				p.vid, p.key = append(p.vid, f), append(p.key, key)
				p.mu.Unlock()
				half := len(f) / 2
				ts := uint32(frames * 3000)
				_ = video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: ts}, Payload: append([]byte{0x10}, f[:half]...)})
				_ = video.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq + 1, Timestamp: ts, Marker: true}, Payload: append([]byte{0x00}, f[half:]...)})
				seq += 2
			}
		}
	}()
	return p
}

// createUnrecorded creates a session with "record": false, for tests that
// count the keyframe requests subscribers cause: the recorder asks for a
// keyframe when it sees none for 5 s of media time, which the fake
// publishers' fast RTP clocks (a frame every 5 ms stamped 33 ms) reach
// within a second.
func (e *edge) createUnrecorded(t *testing.T, ctx context.Context, title string) createResp {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"title": title, "record": false})
	resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions", e.admin, "application/json", body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create session: %d %s", resp.StatusCode, b)
	}
	var cr createResp
	if err := json.Unmarshal(b, &cr); err != nil {
		t.Fatal(err)
	}
	return cr
}

type recordingStatus struct {
	State       string `json:"state"`
	Reason      string `json:"reason"`
	Bytes       int64  `json:"bytes"`
	VideoFrames int    `json:"video_frames"`
	AudioFrames int    `json:"audio_frames"`
	QueueDrops  uint64 `json:"queue_drops"`
	MediaID     string `json:"media_id"`
	Parts       []struct {
		Part  int    `json:"part"`
		State string `json:"state"`
	} `json:"parts"`
	Lesson *struct {
		MediaID         string  `json:"media_id"`
		DurationSeconds float64 `json:"duration_seconds"`
		Parts           []struct {
			Part            int     `json:"part"`
			OffsetSeconds   float64 `json:"offset_seconds"`
			DurationSeconds float64 `json:"duration_seconds"`
			Recovered       bool    `json:"recovered"`
		} `json:"parts"`
		Gaps []struct {
			AtSeconds      float64 `json:"at_seconds"`
			MissingSeconds float64 `json:"missing_seconds"`
		} `json:"gaps"`
	} `json:"lesson"`
}

func (e *edge) recording(t *testing.T, ctx context.Context, id string) recordingStatus {
	t.Helper()
	resp, b := e.Do(t, ctx, "GET", "/api/v1/sessions/"+id, e.admin, "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET session: %d %s", resp.StatusCode, b)
	}
	var v struct {
		Record    bool            `json:"record"`
		Recording recordingStatus `json:"recording"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v.Recording
}

// readWebM demuxes a WebM into its tracks' blocks.
type block struct {
	data []byte
	key  bool
	ms   int64
}

func readWebM(t *testing.T, data []byte) [][]block {
	t.Helper()
	readers, err := mkvcore.NewSimpleBlockReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("reading the WebM back: %v", err)
	}
	got := make([][]block, len(readers))
	var wg sync.WaitGroup
	for i, r := range readers {
		wg.Add(1)
		go func() { // the reader blocks unless every track is read at once
			defer wg.Done()
			for {
				b, key, ts, err := r.Read()
				if err != nil {
					return
				}
				got[i] = append(got[i], block{b, key, ts})
			}
		}()
	}
	wg.Wait()
	return got
}

// TestLessonRecordedIntoCatalogue: a real edge, a pion publisher sending a
// known VP8+Opus stream over WebRTC; the session ends; the lesson appears
// in the catalogue, and /media/{id} serves a WebM whose frames are the
// ones sent, from the first keyframe on, at their pace; Range works.
func TestLessonRecordedIntoCatalogue(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions", e.admin, "application/json", []byte(`{"title":"Physics 9: levers","subject":"physics"}`))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create session: %d %s", resp.StatusCode, b)
	}
	var s createResp
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if st := e.recording(t, ctx, s.ID); st.State != "waiting" {
		t.Fatalf("before publishing the recording is %q, want waiting", st.State)
	}
	p := publishKnown(t, ctx, e, s.ID, s.Tokens.Master)
	waitFor(t, 10*time.Second, "the recording to start", func() bool {
		st := e.recording(t, ctx, s.ID)
		return st.State == "recording" && st.VideoFrames > 10 && st.AudioFrames > 10 && st.Bytes > 0
	})
	time.Sleep(2 * time.Second)
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", s.Tokens.Master, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	var st recordingStatus
	waitFor(t, 15*time.Second, "the recording to be imported", func() bool {
		st = e.recording(t, ctx, s.ID)
		return st.State == "done" || st.State == "failed"
	})
	p.stop()
	<-p.done
	if st.State != "done" || st.MediaID == "" {
		t.Fatalf("recording ended %+v", st)
	}

	// The catalogue lists it.
	resp, b = e.Do(t, ctx, "GET", "/api/v1/catalog?q="+st.MediaID, e.admin, "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("catalog: %d %s", resp.StatusCode, b)
	}
	var cat struct {
		Items []struct {
			ID, Title, Subject, MIME, SHA256, State string
			Size                                    int64
			DurationSeconds                         int `json:"duration_seconds"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &cat); err != nil {
		t.Fatal(err)
	}
	if len(cat.Items) != 1 {
		t.Fatalf("catalogue has %d items for %s: %s", len(cat.Items), st.MediaID, b)
	}
	it := cat.Items[0]
	if !strings.HasPrefix(it.Title, "Physics 9: levers — ") || it.Subject != "physics" || it.MIME != "video/webm" {
		t.Errorf("catalogue item %+v: want the session's title + date, subject physics, video/webm", it)
	}
	if it.DurationSeconds < 2 || it.DurationSeconds > 6 {
		t.Errorf("duration %d s; the lesson lasted about 3 s", it.DurationSeconds)
	}

	// /media/{id} serves it: whole, hash-checked, and by Range.
	resp, data := e.Do(t, ctx, "GET", "/media/"+st.MediaID, "", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "video/webm" {
		t.Fatalf("GET /media: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != it.Size || hex.EncodeToString(sum[:]) != it.SHA256 || int64(len(data)) != st.Bytes {
		t.Errorf("served %d bytes (sha %x); catalogue says %d bytes sha %s; recorder wrote %d", len(data), sum[:4], it.Size, it.SHA256[:8], st.Bytes)
	}
	mid := len(data) / 2
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/media/"+st.MediaID, nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", mid, mid+4095))
	rresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var part bytes.Buffer
	_, _ = part.ReadFrom(rresp.Body)
	rresp.Body.Close()
	if rresp.StatusCode != http.StatusPartialContent || !bytes.Equal(part.Bytes(), data[mid:mid+4096]) {
		t.Errorf("Range mid-file: %d, %d bytes, match %v", rresp.StatusCode, part.Len(), bytes.Equal(part.Bytes(), data[mid:mid+4096]))
	}

	// The frames are the ones sent.
	tracks := readWebM(t, data)
	if len(tracks) != 2 {
		t.Fatalf("%d tracks in the recording, want video and audio", len(tracks))
	}
	p.mu.Lock()
	sentV, sentK, sentA := p.vid, p.key, p.aud
	plis := p.plis
	p.mu.Unlock()
	vid := tracks[0]
	if len(vid) == 0 || !vid[0].key {
		t.Fatalf("the recording does not open on a keyframe (%d video frames)", len(vid))
	}
	first := -1
	for i := range sentV {
		if sentK[i] && bytes.Equal(sentV[i], vid[0].data) {
			first = i
		}
	}
	if first < 0 {
		t.Fatal("the first recorded frame is not a keyframe that was sent")
	}
	// Every recorded frame is a sent one, in order, timed at 30 frames/s
	// from the first; and almost none is missing.
	j := first
	for n, f := range vid {
		for j < len(sentV) && !bytes.Equal(sentV[j], f.data) {
			j++
		}
		if j == len(sentV) {
			t.Fatalf("recorded video frame %d was not sent (or is out of order)", n)
		}
		if want := int64(j-first) * 100 / 3; f.ms < want-2 || f.ms > want+2 {
			t.Errorf("frame %d (sent #%d) at %d ms, want %d", n, j, f.ms, want)
		}
		if f.key != sentK[j] {
			t.Errorf("frame %d keyframe flag %v, sent %v", n, f.key, sentK[j])
		}
	}
	if span := j - first + 1; len(vid) < span*95/100 || len(vid) < 60 {
		t.Errorf("%d video frames recorded of the %d sent from the first keyframe to the last recorded", len(vid), span)
	}
	aud := tracks[1]
	k := 0
	for n, a := range aud {
		for k < len(sentA) && !bytes.Equal(sentA[k], a.data) {
			k++
		}
		if k == len(sentA) {
			t.Fatalf("recorded audio frame %d was not sent (or is out of order)", n)
		}
	}
	if len(aud) < len(vid)*3/2*9/10 { // 50 audio frames/s against 30 video
		t.Errorf("%d audio frames recorded against %d video frames", len(aud), len(vid))
	}
	_, m := e.Do(t, ctx, "GET", "/metrics", "", "", nil)
	if metricstest.Value(m, "campusedge_recordings_done_total") != 1 || metricstest.Value(m, "campusedge_recording_bytes_total") < float64(len(data)) ||
		metricstest.Value(m, "campusedge_recordings_active") != 0 {
		t.Errorf("recording metrics: done %v, bytes %v (file %d), active %v", metricstest.Value(m, "campusedge_recordings_done_total"),
			metricstest.Value(m, "campusedge_recording_bytes_total"), len(data), metricstest.Value(m, "campusedge_recordings_active"))
	}
	t.Logf("recorded %d video frames (from sent #%d) and %d audio frames, %d bytes, %d PLIs seen by the publisher", len(vid), first, len(aud), len(data), plis)
}

// TestRecordingOptOutAndH264: "record": false records nothing and says
// so; an H264 master is reported as not recorded, with the reason.
func TestRecordingOptOutAndH264(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions", e.admin, "application/json", []byte(`{"title":"No recording","record":false}`))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var off createResp
	_ = json.Unmarshal(b, &off)
	mediatest.Publish(t, ctx, e, off.ID, off.Tokens.Master)
	h := e.createSession(t, ctx, "H264 lesson")
	mediatest.PublishFmtp(t, ctx, e, h.ID, h.Tokens.Master, webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
	waitFor(t, 10*time.Second, "the H264 lesson to be reported as not recorded", func() bool {
		st := e.recording(t, ctx, h.ID)
		return st.State == "not_recorded" && strings.Contains(st.Reason, "H264") && strings.Contains(st.Reason, "VP8")
	})
	if _, m := e.Do(t, ctx, "GET", "/metrics", "", "", nil); metricstest.Value(m, "campusedge_recordings_not_recorded_total") != 1 {
		t.Errorf("campusedge_recordings_not_recorded_total = %v, want 1 (the H264 lesson)", metricstest.Value(m, "campusedge_recordings_not_recorded_total"))
	}
	if !strings.Contains(e.log.String(), "lesson not recorded") {
		t.Error("the edge log does not say the H264 lesson is not recorded")
	}
	time.Sleep(time.Second)
	if st := e.recording(t, ctx, off.ID); st.State != "off" || st.Bytes != 0 || len(st.Parts) != 0 {
		t.Errorf("opted-out session's recording: %+v", st)
	}
	for _, id := range []string{off.ID, h.ID} {
		if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+id+"/end", e.admin, "", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("end: %d %s", resp.StatusCode, b)
		}
	}
	time.Sleep(500 * time.Millisecond)
	resp, b = e.Do(t, ctx, "GET", "/api/v1/catalog", e.admin, "", nil)
	var cat struct {
		Total *int `json:"total"`
	}
	if err := json.Unmarshal(b, &cat); err != nil || resp.StatusCode != http.StatusOK || cat.Total == nil || *cat.Total != 0 {
		t.Errorf("catalogue after two unrecorded lessons: %d %s", resp.StatusCode, b)
	}
	// The stop API: master token of another session is refused.
	if resp, _ := e.Do(t, ctx, "POST", "/api/v1/sessions/"+h.ID+"/recording/stop", off.Tokens.Master, "", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("stop with another session's token: %d, want 403", resp.StatusCode)
	}
}
