package ingest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestUndatedRepeatsAreNewMailTheNextDay: a message with neither Message-ID
// nor Date (a monitoring alert) sent again the next day is new mail, not a
// duplicate merged into yesterday's forever; sent again the same day it is
// a retransmission. A message with a Message-ID keeps its id across days
// (a retransmission after a lost 250 must stay one message).
func TestUndatedRepeatsAreNewMailTheNextDay(t *testing.T) {
	pub := &fakePublisher{}
	srv, err := New(baseConfig(), pub, nil, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC).UnixNano())
	srv.now = func() time.Time { return time.Unix(0, clock.Load()) }
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	addr := srv.Addr().String()
	send := func(body string) string {
		t.Helper()
		c := greet(t, addr)
		if r := c.send("alerts@monitor.test", []string{"ops@example.com"}, body); r.code != 250 {
			t.Fatalf("got %v", r)
		}
		msgs := pub.messages()
		return msgs[len(msgs)-1].ID
	}
	const alert = "From: alerts@monitor.test\r\nSubject: disk full on db1\r\n\r\ndisk full\r\n"
	const dated = "From: a@sender.org\r\nMessage-ID: <1@sender.org>\r\nSubject: hi\r\n\r\nhi\r\n"
	today, todayAgain, datedToday := send(alert), send(alert), send(dated)
	clock.Add(int64(2 * time.Hour)) // 01:00 the next day
	tomorrow, datedTomorrow := send(alert), send(dated)
	if today != todayAgain {
		t.Errorf("the same undated message twice in a day: ids %s and %s, want one (a retransmission)", today, todayAgain)
	}
	if tomorrow == today {
		t.Errorf("the undated alert sent again the next day has yesterday's id %s: it would be merged as a duplicate", today)
	}
	if datedTomorrow != datedToday {
		t.Errorf("a message with a Message-ID changed id across days: %s, %s", datedToday, datedTomorrow)
	}
}
