package server_test

import (
	"bytes"
	"reflect"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"hearth.dev/hearth/client"
)

func clientv3WithPrefix() []clientv3.OpOption { return []clientv3.OpOption{clientv3.WithPrefix()} }

func containsBytes(haystack []byte, needle string) bool {
	return bytes.Contains(haystack, []byte(needle))
}

// tokenOf reads a client's token; tests only.
func tokenOf(t testing.TB, c *client.Client) string {
	t.Helper()
	return reflect.ValueOf(c).Elem().FieldByName("token").String()
}
