package store

import (
	"errors"
	"testing"
	"time"
)

func TestCursorRoundTrip(t *testing.T) {
	c := Cursor{StoredAt: time.Date(2024, 11, 26, 10, 0, 0, 123456000, time.UTC).UnixMicro(), ID: "id:with:colons"}
	got, err := DecodeCursor(c.Encode())
	if err != nil || got != c {
		t.Fatalf("DecodeCursor(Encode(%+v)) = %+v, %v", c, got, err)
	}
	for _, bad := range []string{
		"", "!!!",
		"MTp4Ong", // "1:x:x": the time is not a number
		"Mjox",    // "2:1": another version
		"MToxOg",  // "1:1:": no id
	} {
		if _, err := DecodeCursor(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeCursor(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}
