// Package queuetest opens real queues for the tests of the packages built
// on the queue (admin, worker, web, app): an embedded JetStream in the
// test's temporary directory, with short timeouts, closed when the test
// ends. (The queue package's own tests keep their helpers: they cannot
// import this package, which imports theirs.)
package queuetest
