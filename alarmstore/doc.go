// Package alarmstore owns alarms: their records in etcd, the schedule that
// fires them on a node, and the rule that decides what a run's outcome
// does to them.
//
// Records (alarmstore.go): the authoritative record per object
// (alarm/<p>/<class>/<id>), its time-ordered index
// (due/<p>/<due-ms>/<class>/<id>) and the dead-letter list (dead/...). The
// index entry of an alarm is written and deleted in the same etcd
// transaction as its record, so for every record there is exactly one index
// entry at its due time. The functions returning []clientv3.Op never talk to
// etcd: the node puts them into the object's fenced commit, which is what
// makes alarms atomic with storage writes. Readers of the index must still
// compare it with the record before acting, because a reader may hold an
// index entry read before a later commit.
//
// Schedule (schedule.go): the alarms due within a look-ahead window of
// every partition the node serves, in one min-heap with one timer, the
// window extended as time passes, deliveries bounded. It reads the index;
// it never writes.
//
// Policy (policy.go): a pure function from an alarm run's outcome to what
// happens next — delete, keep the handler's new alarm, retry with backoff,
// abandon to a dead letter, or run again after a system failure.
//
// This package never runs a handler and never decides who owns a
// partition: the node delivers alarms to objects and placement says which
// partitions the node serves.
package alarmstore
