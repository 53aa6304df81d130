// Package opsclient reaches a running Levee's operator tools from outside
// it, for `levee queue` and `levee dlq`: over its HTTP ops API (web), or
// straight through JetStream (queue/admin on a connection of its own), so
// that the commands work in every deployment. Both speak admin.Operator,
// and both give back the admin package's errors (an HTTP answer's reason
// names its sentinel), so a caller tells them apart with errors.Is alike.
package opsclient
