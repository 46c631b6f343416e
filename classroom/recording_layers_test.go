package classroom_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/campusedge/campusedge/classroom/internal/mediatest"
	"github.com/campusedge/campusedge/classroom/record"
)

// TestRecordingTakesTheTopSimulcastLayer: a pion publisher sends its
// camera as three simulcast layers (320×180, 640×360, 1280×720) whose
// lowest starts first and whose top starts 700 ms later, as a browser's
// may. The recorded lesson is one WebM whose video track and every
// keyframe are 1280×720: the recorder waited for the top layer instead of
// taking the first to arrive.
func TestRecordingTakesTheTopSimulcastLayer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := startEdge(t, ctx)
	s := e.createSession(t, ctx, "物理 · simulcast")
	pc, err := mediatest.LoopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	pub := mediatest.SimulcastTracks(t, pc, []mediatest.Layer{
		{RID: "l", Width: 320, Height: 180, Bitrate: 150_000},
		{RID: "m", Width: 640, Height: 360, Bitrate: 500_000, Start: 350 * time.Millisecond},
		{RID: "h", Width: 1280, Height: 720, Bitrate: 1_200_000, Start: 700 * time.Millisecond},
	})
	resp, body := e.Do(t, ctx, "POST", "/whip/"+s.ID, s.Tokens.Master, "application/sdp", mediatest.Offer(t, ctx, pc))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHIP: %d %s", resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	sendCtx, stop := context.WithCancel(ctx)
	defer stop()
	go pub.Run(sendCtx)
	waitFor(t, 15*time.Second, "the recording to start", func() bool {
		st := e.recording(t, ctx, s.ID)
		return st.State == "recording" && st.VideoFrames > 30
	})
	time.Sleep(time.Second)
	if resp, b := e.Do(t, ctx, "POST", "/api/v1/sessions/"+s.ID+"/end", s.Tokens.Master, "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("end: %d %s", resp.StatusCode, b)
	}
	var st recordingStatus
	waitFor(t, 15*time.Second, "the recording to be imported", func() bool {
		st = e.recording(t, ctx, s.ID)
		return st.State == "done" || st.State == "failed"
	})
	stop()
	if st.State != "done" || st.MediaID == "" {
		t.Fatalf("recording ended %+v", st)
	}
	resp, data := e.Do(t, ctx, "GET", "/media/"+st.MediaID, "", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /media: %d", resp.StatusCode)
	}
	var videoTrack uint64
	keys, frames := 0, 0
	sizes := map[[2]int]int{}
	sc, err := record.Scan(bytes.NewReader(data), func(tracks []record.TrackInfo, f record.Frame) error {
		if videoTrack == 0 {
			for _, tr := range tracks {
				if tr.Width > 0 {
					videoTrack = tr.Number
				}
			}
		}
		if f.Track != videoTrack {
			return nil
		}
		frames++
		if f.Key && len(f.Data) >= 10 && f.Data[3] == 0x9d && f.Data[4] == 0x01 && f.Data[5] == 0x2a {
			keys++
			sizes[[2]int{int(f.Data[6]) | int(f.Data[7]&0x3f)<<8, int(f.Data[8]) | int(f.Data[9]&0x3f)<<8}]++
		}
		return nil
	})
	if err != nil || sc.Torn {
		t.Fatalf("scan the recording: %v (torn %v)", err, sc.Torn)
	}
	var video record.TrackInfo
	for _, tr := range sc.Tracks {
		if tr.Number == videoTrack {
			video = tr
		}
	}
	t.Logf("recorded video track %dx%d, %d frames, %d keyframes by size %v; PLIs per layer l/m/h %d/%d/%d",
		video.Width, video.Height, frames, keys, sizes, pub.PLIs[0].Load(), pub.PLIs[1].Load(), pub.PLIs[2].Load())
	if video.Width != 1280 || video.Height != 720 {
		t.Errorf("the recording's video track is %dx%d, want the top layer's 1280x720", video.Width, video.Height)
	}
	if keys == 0 || len(sizes) != 1 || sizes[[2]int{1280, 720}] != keys {
		t.Errorf("keyframes in the recording by picture size %v, want every one 1280x720", sizes)
	}
	// Every frame the recorder wrote is in the file (audio queued while
	// the recorder waited for the layers once ran seconds ahead of the
	// video, and the muxer lost the video frames behind it).
	if frames < 30 || frames < st.VideoFrames-2 {
		t.Errorf("%d video frames in the file, the recorder wrote %d; want them all, and at least a second's", frames, st.VideoFrames)
	}
}
