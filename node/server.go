package node

import (
	"context"

	"google.golang.org/grpc"

	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// Register adds the node's Objects service to s.
func (n *Node) Register(s *grpc.Server) {
	durablev1.RegisterObjectsServer(s, &objectsServer{n: n})
}

type objectsServer struct {
	durablev1.UnimplementedObjectsServer
	n *Node
}

// RefOf converts an object reference of the API.
func RefOf(r *durablev1.ObjectRef) Ref {
	if r == nil {
		return Ref{}
	}
	return Ref{Name: r.GetName(), ID: r.GetId(), Location: r.GetLocation()}
}

func (s *objectsServer) Invoke(ctx context.Context, req *durablev1.InvokeRequest) (*durablev1.InvokeResponse, error) {
	if err := checkRequestID(req.GetRequestId()); err != nil {
		return nil, ToStatus(err, "")
	}
	if rid := req.GetRequestId(); rid != "" {
		ctx = WithRequestID(ctx, rid)
	}
	if p := incomingCallPath(ctx); len(p) > 0 {
		ctx = withCallPath(ctx, p)
	}
	ref := RefOf(req.GetObject())
	res, err := s.n.invoke(ctx, hopsFrom(ctx), req.GetClass(), ref, req.GetMethod(), req.GetPayload())
	if err != nil {
		owner := ""
		if id, rerr := s.n.ResolveID(req.GetClass(), ref); rerr == nil {
			owner = s.n.ownerAddr(s.n.partitionOf(id))
		}
		return nil, ToStatus(err, owner)
	}
	resp := &durablev1.InvokeResponse{
		Payload: res.Payload, Id: res.ID.String(), Owner: res.Owner,
		Partition: int32(s.n.partitionOf(res.ID)), PartitionCount: int32(s.n.partitions),
	}
	if s.n.layout.Location(res.ID) != "" {
		resp.HomeDcs = s.n.layout.Homes()
	}
	return resp, nil
}
