package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/levee-mail/levee/app/apptest"
)

// The dashboard's charts hold the mail of the first seconds after start:
// the history is sampled from start, not from the first time someone asks
// for it (issue 13 item 15: mail accepted before the first poll was in the
// cards but on no chart).
func TestHistoryStartsWithTheProcess(t *testing.T) {
	l := apptest.Start(t, apptest.Config(t))
	var lastAccepted time.Time
	for i := range 5 { // over about a second: a sample interval sees some of it
		if err := apptest.Send(l.SMTPAddr, "sender@client.test", []string{"rcpt@example.test"}, apptest.Message(i, 2000)); err != nil {
			t.Fatalf("message %d: %s", i, apptest.ReplyCode(err))
		}
		lastAccepted = time.Now()
		time.Sleep(200 * time.Millisecond)
	}
	// Two sample intervals later, nobody having asked before.
	time.Sleep(4 * time.Second)
	var h struct {
		Samples []struct {
			At     time.Time `json:"at"`
			Ingest float64   `json:"ingest_per_second"`
		} `json:"samples"`
	}
	if code := l.GetJSON("/api/v1/queue/history", &h); code != http.StatusOK {
		t.Fatalf("GET /api/v1/queue/history: %d", code)
	}
	if len(h.Samples) == 0 || !h.Samples[0].At.Before(lastAccepted) {
		b, _ := json.Marshal(h.Samples)
		t.Fatalf("first history asked for 4 s after the last 250 (%s): samples %s; want them to begin before it", lastAccepted.Format(time.RFC3339Nano), b)
	}
	var ingest float64
	for _, s := range h.Samples {
		ingest = max(ingest, s.Ingest)
	}
	if ingest == 0 {
		b, _ := json.Marshal(h.Samples)
		t.Errorf("no sample shows the ingest of the 5 messages: %s", b)
	}
}
