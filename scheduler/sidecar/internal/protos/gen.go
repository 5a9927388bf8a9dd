// Package protos is the generated Go code of sidecar.proto, Soloist's
// description of the Durable Task sidecar protocol (TaskHubSidecarService).
// Do not edit the .pb.go files: change sidecar.proto and run go generate,
// which needs protoc (Debian's protobuf-compiler) on PATH; protoc-gen-go and
// protoc-gen-go-grpc are the tools pinned in go.mod. .ci/run checks that
// regenerating changes nothing.
package protos

//go:generate go run ./wkt wkt.binpb.tmp
//go:generate sh -c "protoc --descriptor_set_in=wkt.binpb.tmp -I. --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative sidecar.proto; rc=$?; rm -f wkt.binpb.tmp; exit $rc"
