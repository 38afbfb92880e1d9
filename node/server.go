package node

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/leader"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// Register adds the node's gRPC services (Objects, Admin, health, reflection)
// to s. Health reports SERVING once the node owns partitions and NOT_SERVING
// after it stops.
func (n *Node) Register(s *grpc.Server) *health.Server {
	durablev1.RegisterObjectsServer(s, &objectsServer{n: n})
	durablev1.RegisterAdminServer(s, &adminServer{n: n})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return hs
}

type objectsServer struct {
	durablev1.UnimplementedObjectsServer
	n *Node
}

func refOf(r *durablev1.ObjectRef) Ref {
	if r == nil {
		return Ref{}
	}
	return Ref{Name: r.GetName(), ID: r.GetId()}
}

func (s *objectsServer) Invoke(ctx context.Context, req *durablev1.InvokeRequest) (*durablev1.InvokeResponse, error) {
	if err := checkRequestID(req.GetRequestId()); err != nil {
		return nil, ToStatus(err, "")
	}
	if rid := req.GetRequestId(); rid != "" {
		ctx = WithRequestID(ctx, rid)
	}
	res, err := s.n.invoke(ctx, hopsFrom(ctx), req.GetClass(), refOf(req.GetObject()), req.GetMethod(), req.GetPayload())
	if err != nil {
		owner := ""
		if _, id, rerr := s.n.resolve(req.GetClass(), refOf(req.GetObject())); rerr == nil && s.n.PartitionCount() > 0 {
			owner = s.n.ownerAddr(s.n.partitionOf(id))
		}
		return nil, ToStatus(err, owner)
	}
	return &durablev1.InvokeResponse{
		Payload: res.Payload, Id: res.ID.String(), Owner: res.Owner,
		Partition: int32(s.n.partitionOf(res.ID)), PartitionCount: int32(s.n.PartitionCount()),
	}, nil
}

type adminServer struct {
	durablev1.UnimplementedAdminServer
	n *Node
}

func alarmProto(r alarmstore.Record) *durablev1.Alarm {
	return &durablev1.Alarm{
		Class: r.Class, Id: r.ID, Name: r.Name, Partition: int32(r.Partition),
		DueUnixMs: r.Due.UnixMilli(), ScheduledUnixMs: r.Scheduled.UnixMilli(),
		RetryCount: int32(r.RetryCount), LastError: r.LastError,
	}
}

func (s *adminServer) GetAlarm(ctx context.Context, req *durablev1.GetAlarmRequest) (*durablev1.GetAlarmResponse, error) {
	class, id, err := s.n.resolve(req.GetClass(), refOf(req.GetObject()))
	if err != nil {
		return nil, ToStatus(err, "")
	}
	if s.n.PartitionCount() == 0 {
		return nil, ToStatus(durable.ErrUnavailable, "")
	}
	rec, err := s.n.alarms.Get(ctx, s.n.partitionOf(id), class.Name, id.String())
	if err != nil {
		return nil, ToStatus(&storageError{err}, "")
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

func (s *adminServer) ListAlarms(ctx context.Context, req *durablev1.ListAlarmsRequest) (*durablev1.ListAlarmsResponse, error) {
	f := alarmstore.ListFilter{Class: req.GetClass(), Limit: clampLimit(req.GetLimit(), 100, 10000)}
	if ms := req.GetDueBeforeUnixMs(); ms > 0 {
		f.DueBefore = time.UnixMilli(ms)
	}
	recs, more, err := s.n.alarms.List(ctx, f)
	if err != nil {
		return nil, ToStatus(&storageError{err}, "")
	}
	out := &durablev1.ListAlarmsResponse{Truncated: more}
	for _, r := range recs {
		out.Alarms = append(out.Alarms, alarmProto(r))
	}
	return out, nil
}

func (s *adminServer) ListDeadLetters(ctx context.Context, req *durablev1.ListDeadLettersRequest) (*durablev1.ListDeadLettersResponse, error) {
	dls, more, err := s.n.alarms.ListDead(ctx, req.GetClass(), clampLimit(req.GetLimit(), 100, 10000))
	if err != nil {
		return nil, ToStatus(&storageError{err}, "")
	}
	out := &durablev1.ListDeadLettersResponse{Truncated: more}
	for _, d := range dls {
		out.DeadLetters = append(out.DeadLetters, &durablev1.DeadLetter{
			Alarm: alarmProto(d.Record), AbandonedUnixMs: d.Abandoned.UnixMilli(),
		})
	}
	return out, nil
}

func (s *adminServer) Status(ctx context.Context, _ *durablev1.StatusRequest) (*durablev1.StatusResponse, error) {
	if s.n.PartitionCount() == 0 {
		return nil, ToStatus(fmt.Errorf("%w: node is starting", durable.ErrUnavailable), "")
	}
	st, err := s.n.Status(ctx)
	if err != nil {
		return nil, ToStatus(&storageError{err}, "")
	}
	return st, nil
}

func (s *adminServer) Drain(context.Context, *durablev1.DrainRequest) (*durablev1.DrainResponse, error) {
	if s.n.PartitionCount() == 0 {
		return nil, ToStatus(fmt.Errorf("%w: node is starting", durable.ErrUnavailable), "")
	}
	s.n.Drain()
	out := &durablev1.DrainResponse{Node: s.n.cfg.ID}
	for _, p := range s.n.OwnedPartitions() {
		out.Remaining = append(out.Remaining, int32(p))
	}
	slices.Sort(out.Remaining)
	return out, nil
}

// Status describes the cluster as seen from etcd, plus this node's counters.
func (n *Node) Status(ctx context.Context) (*durablev1.StatusResponse, error) {
	v, err := leader.Read(ctx, n.client, n.keys, n.meta)
	if err != nil {
		return nil, err
	}
	leaders, err := leader.Leaders(ctx, n.client, n.keys)
	if err != nil {
		return nil, err
	}
	out := &durablev1.StatusResponse{
		ClusterPrefix: n.keys.Prefix(), PartitionCount: int32(n.PartitionCount()), AnsweredBy: n.cfg.ID,
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
	for _, name := range n.meta.HomeDCs {
		dc(name)
	}
	for _, l := range leaders {
		d := dc(l.DC)
		d.Leader, d.Term = l.Node, l.Term
	}
	for _, ni := range v.Nodes {
		ns := &durablev1.NodeStatus{Id: ni.ID, Dc: ni.DC, Address: ni.Address, Draining: ni.Draining}
		if ni.ID == n.cfg.ID {
			ns.ActiveObjects = int64(n.ActiveObjects())
		}
		byNode[ni.ID] = ns
		out.Nodes = append(out.Nodes, ns)
		dc(ni.DC).LiveNodes++
	}
	for p := 0; p < n.PartitionCount(); p++ {
		count, err := n.alarms.CountPending(ctx, p)
		if err != nil {
			return nil, err
		}
		ps := &durablev1.PartitionStatus{Partition: int32(p), PendingAlarms: count, HomeDc: n.meta.Home(p)}
		if o, ok := v.Owners[p]; ok {
			ps.Owner, ps.Token = o.Node, o.Token
			if ns := byNode[o.Node]; ns != nil {
				ns.Partitions = append(ns.Partitions, int32(p))
			}
		}
		if a, ok := v.Assign[p]; ok {
			ps.HomeDc, ps.ManagedByDc, ps.AssignedNode = a.Home, a.DC, a.Node
			d := dc(a.DC)
			d.Partitions++
			if a.Adopted() {
				d.Adopted++
			}
			d.LastReassignmentUnixMs = max(d.LastReassignmentUnixMs, a.At)
		}
		out.PendingAlarms += count
		out.Partitions = append(out.Partitions, ps)
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].Id < out.Nodes[j].Id })
	sort.Slice(out.DataCenters, func(i, j int) bool { return out.DataCenters[i].Dc < out.DataCenters[j].Dc })
	if out.DeadLetters, err = n.alarms.CountDead(ctx); err != nil {
		return nil, err
	}
	return out, nil
}
