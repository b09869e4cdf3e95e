// Package watch fans applied changes out to watchers without ever making the write path wait.
//
// The apply loop hands every applied group of events to the Hub (Notify), which keeps the most
// recent events in a ring bounded by bytes and wakes the waiting streams; Notify never blocks.
// Each watcher only remembers the next revision it must deliver. A stream reads what its
// watchers need from the ring, or, for a watcher that fell behind the ring (a slow reader, or
// one that asked for old history), from the revision history in storage — so a slow watcher
// costs memory for nothing but its own in-flight response, and never loses or repeats an
// event: delivery always resumes at exactly its next revision.
package watch
