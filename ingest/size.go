package ingest

import (
	"bytes"
	"strconv"
)

// sizeAdvert puts Levee's SIZE back into the EHLO reply.
//
// go-smtp's DATA reader refuses the read that would find the end-of-data
// line once it has handed out MaxMessageBytes bytes, so a message of exactly
// the advertised SIZE got a permanent 552 (RFC 1870: SIZE is the largest
// message accepted). Levee therefore gives go-smtp one byte more than
// smtp.max_message_bytes, refuses that byte itself (readBody; MAIL SIZE= in
// session.Mail), and corrects the capability go-smtp advertises from its
// figure on the way out.
type sizeAdvert struct {
	goSMTP, levee [][]byte // the capability line as go-smtp writes it, and as it should read
}

// goSMTPMaxMessageBytes is what go-smtp is told for a limit of limit bytes.
func goSMTPMaxMessageBytes(limit int64) int64 { return limit + 1 }

func newSizeAdvert(limit int64) sizeAdvert {
	var a sizeAdvert
	for _, sep := range []string{"-", " "} { // a middle or the last line of the reply
		a.goSMTP = append(a.goSMTP, []byte("250"+sep+"SIZE "+strconv.FormatInt(goSMTPMaxMessageBytes(limit), 10)+"\r\n"))
		a.levee = append(a.levee, []byte("250"+sep+"SIZE "+strconv.FormatInt(limit, 10)+"\r\n"))
	}
	return a
}

// fix returns b with go-smtp's SIZE capability replaced by Levee's. The EHLO
// reply is one write (a few hundred bytes, go-smtp flushes each reply once),
// and no other reply carries a line starting "250-SIZE " or "250 SIZE ".
func (a sizeAdvert) fix(b []byte) []byte {
	for i, old := range a.goSMTP {
		if j := bytes.Index(b, old); j >= 0 && (j == 0 || b[j-1] == '\n') {
			b = append(append(append([]byte(nil), b[:j]...), a.levee[i]...), b[j+len(old):]...)
		}
	}
	return b
}
