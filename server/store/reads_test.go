package store

import (
	"context"
	"errors"
	"slices"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// recordKV records whether each read was serializable, and fails the
// reads named in fail.
type recordKV struct {
	clientv3.KV
	got  []bool
	fail map[int]bool
}

func (r *recordKV) Get(_ context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	n := len(r.got)
	r.got = append(r.got, clientv3.OpGet(key, opts...).IsSerializable())
	if r.fail[n] {
		return nil, errors.New("etcd is away")
	}
	return &clientv3.GetResponse{}, nil
}

// TestReadSession holds a read session to its promise: the first read
// that succeeds is linearizable and the ones after it serializable, and
// only from a client of one member, in a session, on a first attempt.
func TestReadSession(t *testing.T) {
	for _, tc := range []struct {
		name      string
		oneMember bool
		session   bool
		attempt   int
		fail      map[int]bool
		want      []bool // serializable, per read
	}{
		{"no session", true, false, 0, nil, []bool{false, false, false}},
		{"session", true, true, 0, nil, []bool{false, true, true}},
		{"first read failed", true, true, 0, map[int]bool{0: true}, []bool{false, false, true}},
		{"several members", false, true, 0, nil, []bool{false, false, false}},
		{"a hook's retry", true, true, 1, nil, []bool{false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordKV{fail: tc.fail}
			kv := &sessionKV{KV: rec, oneMember: tc.oneMember}
			ctx := context.Background()
			if tc.session {
				ctx = WithReadSession(ctx)
			}
			ctx = withAttempt(ctx, tc.attempt)
			for range tc.want {
				kv.Get(ctx, "/k")
			}
			if !slices.Equal(rec.got, tc.want) {
				t.Errorf("serializable reads: got %v, want %v", rec.got, tc.want)
			}
		})
	}
}

// TestReadSessionRestart: after a lost race the session's next read is
// linearizable again, and the ones after it serializable.
func TestReadSessionRestart(t *testing.T) {
	rec := &recordKV{}
	kv := &sessionKV{KV: rec, oneMember: true}
	ctx := WithReadSession(context.Background())
	kv.Get(ctx, "/a")
	kv.Get(ctx, "/b")
	restartReadSession(ctx)
	kv.Get(ctx, "/a")
	kv.Get(ctx, "/b")
	if want := []bool{false, true, false, true}; !slices.Equal(rec.got, want) {
		t.Errorf("serializable reads: got %v, want %v", rec.got, want)
	}
}
