package nft

import "errors"

// ErrNoTable is matched by errors.Is when there is no table inet podnet to
// explain from.
//
// Branch nft-list declares the same variable, with the same text, in
// nft/list.go: when both are merged, delete this file.
var ErrNoTable = errors.New("nft: no table inet " + TableName)
