package ingest

import (
	"bytes"
	"strconv"
)

// sizeAdvert puts Levee's SIZE into the EHLO reply.
//
// go-smtp's DATA reader refuses the read that would find the end-of-data
// line once it has handed out MaxMessageBytes bytes, so with go-smtp
// enforcing the limit a message of exactly the advertised SIZE got a
// permanent 552 (RFC 1870: SIZE is the largest message accepted). Levee
// therefore gives go-smtp no limit (it then advertises a bare "SIZE",
// which RFC 1870 reads as no information), enforces smtp.max_message_bytes
// itself (readBody for DATA and BDAT, session.Mail for MAIL SIZE=) and adds
// the figure to the capability on the way out. Inside STARTTLS the reply is
// encrypted before trackedConn sees it, so there the bare SIZE stays: true,
// if less informative.
type sizeAdvert struct {
	goSMTP, levee [][]byte // the capability line as go-smtp writes it, and as it should read
}

func newSizeAdvert(limit int64) sizeAdvert {
	var a sizeAdvert
	for _, sep := range []string{"-", " "} { // a middle or the last line of the reply
		a.goSMTP = append(a.goSMTP, []byte("250"+sep+"SIZE\r\n"))
		a.levee = append(a.levee, []byte("250"+sep+"SIZE "+strconv.FormatInt(limit, 10)+"\r\n"))
	}
	return a
}

// fix returns b with go-smtp's SIZE capability replaced by Levee's. The EHLO
// reply is one write (a few hundred bytes, go-smtp flushes each reply once),
// and no other reply has a line that is just "250-SIZE" or "250 SIZE".
func (a sizeAdvert) fix(b []byte) []byte {
	for i, old := range a.goSMTP {
		if j := bytes.Index(b, old); j >= 0 && (j == 0 || b[j-1] == '\n') {
			b = append(append(append([]byte(nil), b[:j]...), a.levee[i]...), b[j+len(old):]...)
		}
	}
	return b
}
