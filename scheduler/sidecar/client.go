package sidecar

import (
	"context"

	"google.golang.org/protobuf/types/known/emptypb"
)

// Hello answers the SDKs' connection check.
func (s *Server) Hello(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}
