package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/metadata"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/leader"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/placement"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// adminServer serves durable.v1.Admin: alarms, dead letters, the cluster's
// status and drain. It reads etcd directly; errors go through the node's
// one table.
type adminServer struct {
	durablev1.UnimplementedAdminServer
	a *Agent
}

func (s *adminServer) alarms() *alarmstore.Store { return alarmstore.New(s.a.client, s.a.keys) }

// storageErr marks an etcd failure: unavailable, safe to retry.
func storageErr(err error) error { return fmt.Errorf("%w: %w", durable.ErrUnavailable, err) }

func alarmProto(r alarmstore.Record) *durablev1.Alarm {
	return &durablev1.Alarm{
		Class: r.Class, Id: r.ID.String(), Name: r.Name, Partition: int32(r.Partition),
		DueUnixMs: r.Due.UnixMilli(), ScheduledUnixMs: r.Scheduled.UnixMilli(),
		RetryCount: int32(r.RetryCount), LastError: r.LastError,
	}
}

func (s *adminServer) GetAlarm(ctx context.Context, req *durablev1.GetAlarmRequest) (*durablev1.GetAlarmResponse, error) {
	class, id, err := s.a.Node.Resolve(req.GetClass(), node.RefOf(req.GetObject()))
	if err != nil {
		return nil, node.ToStatus(err, "")
	}
	rec, err := s.alarms().Get(ctx, s.a.Node.PartitionOf(id), class.Name, id)
	if err != nil {
		return nil, node.ToStatus(storageErr(err), "")
	}
	if rec == nil {
		return &durablev1.GetAlarmResponse{}, nil
	}
	return &durablev1.GetAlarmResponse{Alarm: alarmProto(*rec)}, nil
}

func clampLimit(l int32, def, most int) int {
	switch {
	case l <= 0:
		return def
	case int(l) > most:
		return most
	}
	return int(l)
}

// listFilter is the listing req asks for over a cluster of partitions.
func listFilter(req *durablev1.ListAlarmsRequest, partitions int) alarmstore.ListFilter {
	f := alarmstore.ListFilter{
		Class: req.GetClass(), Limit: clampLimit(req.GetLimit(), 100, 10000),
		Partitions: partitions, After: req.GetPageToken(),
	}
	if ms := req.GetDueBeforeUnixMs(); ms > 0 {
		f.DueBefore = time.UnixMilli(ms)
	}
	return f
}

func (s *adminServer) ListAlarms(ctx context.Context, req *durablev1.ListAlarmsRequest) (*durablev1.ListAlarmsResponse, error) {
	recs, next, err := s.alarms().List(ctx, listFilter(req, s.a.meta.Partitions))
	if err != nil {
		return nil, node.ToStatus(listErr(err), "")
	}
	out := &durablev1.ListAlarmsResponse{Truncated: next != "", NextPageToken: next}
	for _, r := range recs {
		out.Alarms = append(out.Alarms, alarmProto(r))
	}
	return out, nil
}

// listErr keeps a bad page token's identity; anything else is etcd's.
func listErr(err error) error {
	if errors.Is(err, durable.ErrInvalidArgument) {
		return err
	}
	return storageErr(err)
}

func (s *adminServer) ListDeadLetters(ctx context.Context, req *durablev1.ListDeadLettersRequest) (*durablev1.ListDeadLettersResponse, error) {
	dls, next, err := s.alarms().ListDead(ctx, alarmstore.DeadFilter{
		Class: req.GetClass(), Limit: clampLimit(req.GetLimit(), 100, 10000),
		Partitions: s.a.meta.Partitions, After: req.GetPageToken(),
	})
	if err != nil {
		return nil, node.ToStatus(listErr(err), "")
	}
	out := &durablev1.ListDeadLettersResponse{Truncated: next != "", NextPageToken: next}
	for _, d := range dls {
		out.DeadLetters = append(out.DeadLetters, &durablev1.DeadLetter{
			Alarm: alarmProto(d.Record), AbandonedUnixMs: d.Abandoned.UnixMilli(),
		})
	}
	return out, nil
}

// purgeFilter validates req and returns the dead letters it selects over a
// cluster of partitions. An empty request is refused: purging everything
// must be asked for with all.
func purgeFilter(req *durablev1.PurgeDeadLettersRequest, layout durable.Layout) (alarmstore.PurgeFilter, error) {
	f := alarmstore.PurgeFilter{Class: req.GetClass(), Partitions: layout.Partitions()}
	if ms := req.GetAbandonedBeforeUnixMs(); ms > 0 {
		f.AbandonedBefore = time.UnixMilli(ms)
	}
	filtered := f.Class != "" || req.GetObject() != nil || req.GetAbandonedBeforeUnixMs() > 0
	switch {
	case req.GetAll() && filtered:
		return f, durable.Invalidf("give all or filters (class, object, abandoned before), not both")
	case !req.GetAll() && !filtered:
		return f, durable.Invalidf("say which dead letters to purge (class, object, abandoned before), or all")
	case req.GetObject() != nil:
		if f.Class == "" {
			return f, durable.Invalidf("an object needs its class")
		}
		id, err := node.ResolveIDIn(layout, f.Class, node.RefOf(req.GetObject()))
		if err != nil {
			return f, err
		}
		f.ID = id
	}
	return f, nil
}

func (s *adminServer) PurgeDeadLetters(ctx context.Context, req *durablev1.PurgeDeadLettersRequest) (*durablev1.PurgeDeadLettersResponse, error) {
	f, err := purgeFilter(req, s.a.Node.Layout())
	if err != nil {
		return nil, node.ToStatus(err, "")
	}
	n, err := s.alarms().PurgeDead(ctx, f)
	if err != nil {
		return nil, node.ToStatus(listErr(err), "")
	}
	s.a.log.Info("dead letters purged", "purged", n, "class", f.Class, "object", req.GetObject().String(), "abandoned_before", f.AbandonedBefore)
	return &durablev1.PurgeDeadLettersResponse{Purged: n}, nil
}

// forwardedHeader marks an Admin call one node forwarded to another: it
// is forwarded no further (views that disagree must not bounce it).
const forwardedHeader = "durable-admin-forwarded"

func (s *adminServer) RequeueDeadLetter(ctx context.Context, req *durablev1.RequeueDeadLetterRequest) (*durablev1.RequeueDeadLetterResponse, error) {
	ref := node.RefOf(req.GetObject())
	id, err := s.a.Node.ResolveID(req.GetClass(), ref)
	if err != nil {
		return nil, node.ToStatus(err, "")
	}
	p := s.a.Node.PartitionOf(id)
	local, owner := s.a.Node.Owner(p)
	md, _ := metadata.FromIncomingContext(ctx)
	if !local {
		if owner == "" || len(md.Get(forwardedHeader)) > 0 {
			return nil, node.ToStatus(fmt.Errorf("%w: partition %d has no owner this node can reach now", durable.ErrUnavailable, p), owner)
		}
		conn, err := s.a.Node.Peer(owner)
		if err != nil {
			return nil, node.ToStatus(fmt.Errorf("%w: %w", durable.ErrUnavailable, err), owner)
		}
		return durablev1.NewAdminClient(conn).RequeueDeadLetter(metadata.AppendToOutgoingContext(ctx, forwardedHeader, "1"), req)
	}
	var scheduled time.Time
	if ms := req.GetScheduledUnixMs(); ms > 0 {
		scheduled = time.UnixMilli(ms)
	}
	if err := s.a.Node.RequeueDeadLetter(ctx, req.GetClass(), ref, scheduled); err != nil {
		return nil, node.ToStatus(err, "")
	}
	rec, err := s.alarms().Get(ctx, p, req.GetClass(), id)
	if err != nil || rec == nil {
		return &durablev1.RequeueDeadLetterResponse{}, nil // set and committed; it may already have run
	}
	s.a.log.Info("dead letter requeued", "class", req.GetClass(), "id", id, "due", rec.Due)
	return &durablev1.RequeueDeadLetterResponse{Alarm: alarmProto(*rec)}, nil
}

func (s *adminServer) Locate(ctx context.Context, req *durablev1.LocateRequest) (*durablev1.LocateResponse, error) {
	class, id, err := s.a.Node.Resolve(req.GetClass(), node.RefOf(req.GetObject()))
	if err != nil {
		return nil, node.ToStatus(err, "")
	}
	p := s.a.Node.PartitionOf(id)
	v, err := placement.Read(ctx, s.a.client, s.a.keys, s.a.meta)
	if err != nil {
		return nil, node.ToStatus(storageErr(err), "")
	}
	out := &durablev1.LocateResponse{Id: id.String(), Partition: int32(p), HomeDc: s.a.meta.Home(p)}
	if o, ok := v.Owners[p]; ok {
		out.Owner, out.Token, out.OwnerAddress = o.Node, o.Token, v.Nodes[o.Node].Address
	}
	if as, ok := v.Assign[p]; ok {
		out.AssignedNode, out.ManagedByDc, out.HomeDc = as.Node, as.DC, as.Home
	}
	rec, err := s.alarms().Get(ctx, p, class.Name, id)
	if err != nil {
		return nil, node.ToStatus(storageErr(err), "")
	}
	if rec != nil {
		out.PendingAlarm = alarmProto(*rec)
	}
	return out, nil
}

func (s *adminServer) Status(ctx context.Context, _ *durablev1.StatusRequest) (*durablev1.StatusResponse, error) {
	st, err := s.a.Status(ctx)
	if err != nil {
		return nil, node.ToStatus(storageErr(err), "")
	}
	return st, nil
}

func (s *adminServer) Drain(context.Context, *durablev1.DrainRequest) (*durablev1.DrainResponse, error) {
	s.a.Member.Drain()
	out := &durablev1.DrainResponse{Node: s.a.cfg.Node.ID}
	for _, p := range s.a.Member.Owned() {
		out.Remaining = append(out.Remaining, int32(p))
	}
	slices.Sort(out.Remaining)
	return out, nil
}

// Status describes the cluster as seen from etcd, plus this node's own
// figures. Its reads run side by side, a few round trips in all, so it
// answers quickly during a failover too.
func (a *Agent) Status(ctx context.Context) (*durablev1.StatusResponse, error) {
	var (
		v       placement.Snapshot
		leaders []leader.Info
		pending []int64
		dead    int64
		hist    leader.History
	)
	alarms := alarmstore.New(a.client, a.keys)
	var g errgroup.Group
	g.Go(func() (err error) { v, err = placement.Read(ctx, a.client, a.keys, a.meta); return })
	g.Go(func() (err error) { leaders, err = leader.Leaders(ctx, a.client, a.keys); return })
	g.Go(func() (err error) { pending, err = alarms.CountPending(ctx, a.meta.Partitions); return })
	g.Go(func() (err error) { dead, err = alarms.CountDead(ctx); return })
	g.Go(func() (err error) { hist, err = leader.ReadHistory(ctx, a.client, a.keys); return })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := &durablev1.StatusResponse{
		ClusterPrefix: a.keys.Prefix(), PartitionCount: int32(a.meta.Partitions), AnsweredBy: a.cfg.Node.ID,
		DeadLetters: dead, RequiredClasses: v.Classes,
	}
	byNode := map[string]*durablev1.NodeStatus{}
	byDC := map[string]*durablev1.DataCenterStatus{}
	dc := func(name string) *durablev1.DataCenterStatus {
		if byDC[name] == nil {
			byDC[name] = &durablev1.DataCenterStatus{Dc: name}
			out.DataCenters = append(out.DataCenters, byDC[name])
		}
		return byDC[name]
	}
	for _, name := range a.meta.HomeDCs {
		dc(name)
	}
	for _, l := range leaders {
		d := dc(l.DC)
		d.Leader, d.Term = l.Node, l.Term
	}
	for _, ni := range v.Nodes {
		ns := &durablev1.NodeStatus{Id: ni.ID, Dc: ni.DC, Address: ni.Address, Draining: ni.Draining,
			Classes: ni.ClassList(), MissingClasses: ni.Missing(v.Classes), Records: int32(ni.Records)}
		if ni.ID == a.cfg.Node.ID {
			a.fillOwnStatus(ns)
		}
		byNode[ni.ID] = ns
		out.Nodes = append(out.Nodes, ns)
		dc(ni.DC).LiveNodes++
	}
	for p := range a.meta.Partitions {
		ps := &durablev1.PartitionStatus{Partition: int32(p), PendingAlarms: pending[p], HomeDc: a.meta.Home(p)}
		if o, ok := v.Owners[p]; ok {
			ps.Owner, ps.Token = o.Node, o.Token
			if ns := byNode[o.Node]; ns != nil {
				ns.Partitions = append(ns.Partitions, int32(p))
			}
		}
		if as, ok := v.Assign[p]; ok {
			ps.HomeDc, ps.ManagedByDc, ps.AssignedNode = as.Home, as.DC, as.Node
			d := dc(as.DC)
			d.Partitions++
			if as.Adopted() {
				d.Adopted++
			}
			d.LastReassignmentUnixMs = max(d.LastReassignmentUnixMs, as.At)
		}
		out.PendingAlarms += pending[p]
		out.Partitions = append(out.Partitions, ps)
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].Id < out.Nodes[j].Id })
	sort.Slice(out.DataCenters, func(i, j int) bool { return out.DataCenters[i].Dc < out.DataCenters[j].Dc })
	now := a.cfg.Node.Clock.Now()
	fillHistory(out, v, leaders, hist, now)
	out.LostNodes = lostNodes(v, hist, byDC)
	return out, nil
}

// fillHistory adds to each data center what the leaders published: the
// term number and election time of its leader, since when it is up or
// down, and how far an adoption or a failback has come.
func fillHistory(out *durablev1.StatusResponse, v placement.Snapshot, leaders []leader.Info, h leader.History, now time.Time) {
	// Only the records of leaders in office speak of the present.
	var current []leader.Record
	for _, l := range leaders {
		if r, ok := h.Records[l.DC]; ok && r.Term == l.Term {
			current = append(current, r)
		}
	}
	left := func(since, period int64) int64 { return max(0, since+period-now.UnixMilli()) }
	for _, d := range out.DataCenters {
		for _, r := range current {
			if r.DC == d.Dc {
				d.TermNumber, d.ElectedUnixMs = r.Number, r.ElectedAt
			}
		}
		var seen *leader.Record // the first leader in office that sees d
		for i, r := range current {
			_, down := r.DownSince[d.Dc]
			_, up := r.UpSince[d.Dc]
			if down || up {
				seen = &current[i]
				break
			}
		}
		adopters := map[string]bool{}
		waiting := false // partitions d manages while down, not yet adopted
		for _, as := range v.Assign {
			if as.Home == d.Dc && as.DC != d.Dc {
				d.Away++
				adopters[as.DC] = true
			}
			if as.DC == d.Dc {
				waiting = true
			}
		}
		d.AdoptedBy = slices.Sorted(maps.Keys(adopters))
		if seen == nil {
			continue
		}
		d.DownSinceUnixMs, d.UpSinceUnixMs = seen.DownSince[d.Dc], seen.UpSince[d.Dc]
		if d.DownSinceUnixMs > 0 && waiting {
			d.AdoptionInMs = left(d.DownSinceUnixMs, seen.GraceMs)
		}
		if d.UpSinceUnixMs > 0 && d.Away > 0 {
			d.HomeInMs = left(d.UpSinceUnixMs, seen.StabiliseMs)
		}
	}
}

// lostNodes lists the nodes that are gone: those a leader recorded as lost
// (unless they registered again) and those still assigned partitions
// without being registered (their data center waits for adoption).
func lostNodes(v placement.Snapshot, h leader.History, dcs map[string]*durablev1.DataCenterStatus) []*durablev1.LostNode {
	byID := map[string]*durablev1.LostNode{}
	for _, l := range h.Lost {
		if _, live := v.Nodes[l.Node]; live {
			continue
		}
		ln := &durablev1.LostNode{Id: l.Node, Dc: l.DC, LostUnixMs: l.At, MovedTo: map[string]int32{}}
		for n, c := range l.Moved {
			ln.MovedTo[n] = int32(c)
		}
		byID[l.Node] = ln
	}
	for _, as := range v.Assign {
		if _, live := v.Nodes[as.Node]; live || as.Node == "" {
			continue
		}
		ln := byID[as.Node]
		if ln == nil {
			ln = &durablev1.LostNode{Id: as.Node, Dc: as.DC}
			if d := dcs[as.DC]; d != nil {
				ln.LostUnixMs = d.DownSinceUnixMs
			}
			byID[as.Node] = ln
		}
		ln.Waiting++
	}
	out := slices.Collect(maps.Values(byID))
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// fillOwnStatus adds what only this node knows of itself.
func (a *Agent) fillOwnStatus(ns *durablev1.NodeStatus) {
	h := a.Member.Health()
	adm := a.Node.Admission()
	ns.ActiveObjects = int64(a.Node.ActiveObjects())
	ns.LeaseValid = h.Registered && h.Margin > 0
	ns.LeaseMarginMs = h.Margin.Milliseconds()
	ns.KeepaliveLatencyMs = float64(h.KeepAlive.Microseconds()) / 1000
	ns.CallsInFlight, ns.CallLimit, ns.Refused = int64(adm.InFlight), int64(adm.Limit), adm.Refused
	ns.LeaseLosses, ns.PartitionsLost = h.LeaseLosses, h.PartitionsLost
}
