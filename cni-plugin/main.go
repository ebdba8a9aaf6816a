// Command podnet is the CNI plugin of podnet (conflist type "podnet"). It does no
// networking itself: it forwards each CNI call (ADD, DEL, CHECK, STATUS, GC) over
// podnetd's unix socket and prints the daemon's result converted to the spec
// version the runtime asked for. When the daemon cannot be reached it fails with
// CNI error 11 (try again later) naming the socket, within a bounded time. It
// writes nothing to stdout but the result.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet/daemon/api"
)

// netConf is the plugin's part of the network configuration.
type netConf struct {
	types.PluginConf
	// Socket is podnetd's unix socket; api.DefaultSocket when empty.
	Socket string `json:"socket,omitempty"`
	// TimeoutSeconds bounds one call to the daemon (default 60).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    call("ADD"),
		Del:    call("DEL"),
		Check:  call("CHECK"),
		Status: call("STATUS"),
		GC:     call("GC"),
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "podnet CNI plugin: forwards CNI calls to podnetd")
}

func parseConf(data []byte) (*netConf, error) {
	conf := &netConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "parse network configuration", err.Error())
	}
	if conf.Socket == "" {
		conf.Socket = api.DefaultSocket
	}
	if conf.TimeoutSeconds <= 0 {
		conf.TimeoutSeconds = 60
	}
	return conf, nil
}

func call(command string) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		conf, err := parseConf(args.StdinData)
		if err != nil {
			return err
		}
		timeout := time.Duration(conf.TimeoutSeconds) * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		resp, err := api.CallCNI(ctx, conf.Socket, timeout, api.CNIRequest{
			Command: command, ContainerID: args.ContainerID, NetNS: args.Netns,
			IfName: args.IfName, Args: args.Args, Path: args.Path, Config: args.StdinData,
		})
		if err != nil {
			return asCNIError(err, conf.Socket)
		}
		if command != "ADD" {
			return nil
		}
		result, err := current.NewResult(resp.Result)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "decode result from podnetd", err.Error())
		}
		return types.PrintResult(result, conf.CNIVersion)
	}
}

// asCNIError maps a client error to a CNI error: the daemon's own error as it is,
// an unreachable daemon as code 11 so the runtime retries.
func asCNIError(err error, socket string) error {
	var apiErr *api.Error
	if errors.As(err, &apiErr) {
		return types.NewError(apiErr.Code, apiErr.Msg, apiErr.Details)
	}
	if errors.Is(err, api.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("podnetd is not reachable at %s", socket), err.Error())
	}
	return types.NewError(types.ErrInternal, "podnet plugin", err.Error())
}
