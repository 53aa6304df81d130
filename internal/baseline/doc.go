// Package baseline keeps how fast something is when nothing crowds it: the
// idle baseline of a latency, taken as the lowest decile of the figures of
// its recent windows (their minimum would be one lucky window, and noise
// above it would read as over budget). The web role keeps one for its
// readers' p99, the worker's autoscaler one for the store's write p95; each
// budget is then a multiple of its baseline.
package baseline
