// Package durable is the public API of the durable-objects runtime: the types a
// user's Go classes are written against.
//
// A class is a Go type registered under a name with a Factory. Each object of
// the class is addressed by an ID (see IDFromName, NewUniqueID, IDFromString);
// exactly one instance of an object is live in the cluster at a time, it
// handles one event (invocation or alarm) at a time, and it owns a private
// transactional Storage and one persistent alarm. WithLocation makes an ID
// whose object lives in a chosen data center (a location hint; see Layout).
//
// Every write an event makes — storage and alarm alike — is buffered and
// committed to etcd in one transaction when the event ends; the event's result
// is released only after that commit is durable (the output gate). An event
// that fails writes nothing (for alarms, see the retry rules on Alarmer).
//
// A class handles invocations by name and bytes (Object.Invoke), or declares
// typed methods — Method, bound to handlers with Handle and routed by a
// Router built with Methods — whose payloads are JSON, or protobuf for
// proto.Message types; the Go client calls them with client.Call. See
// typed.go and docs/design.md ("Typed methods").
//
// The runtime that runs classes lives in package node; this package has no
// dependency on etcd or gRPC so that class code stays small.
package durable
