package store

import (
	"context"
	"errors"
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// recordKV records whether each read was serializable, and fails the
// reads named in fail.
type recordKV struct {
	clientv3.KV
	got  []bool
	fail map[int]bool
	// mod, when set, is the mod revision of the key each read finds
	// (0: missing), by whether the read was serializable.
	mod map[bool]int64
}

func (r *recordKV) Get(_ context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	n := len(r.got)
	r.got = append(r.got, clientv3.OpGet(key, opts...).IsSerializable())
	if r.fail[n] {
		return nil, errors.New("etcd is away")
	}
	resp := &clientv3.GetResponse{}
	if m := r.mod[r.got[n]]; m != 0 {
		resp.Kvs = []*mvccpb.KeyValue{{Key: []byte(key), ModRevision: m}}
	}
	return resp, nil
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

// TestReadForUpdate: an update's first read is serializable from a
// client of one member, and asked again linearizably when the member
// may be behind (the key missing, older than the precondition).
func TestReadForUpdate(t *testing.T) {
	for _, tc := range []struct {
		name         string
		oneMember    bool
		attempt      int
		precondition int64
		mod          map[bool]int64 // by serializable
		want         []bool
		wantMod      int64
	}{
		{"several members", false, 0, 0, map[bool]int64{false: 7, true: 7}, []bool{false}, 7},
		{"one member", true, 0, 0, map[bool]int64{false: 7, true: 7}, []bool{true}, 7},
		{"precondition met", true, 0, 7, map[bool]int64{false: 7, true: 7}, []bool{true}, 7},
		{"conflict", true, 0, 5, map[bool]int64{false: 7, true: 7}, []bool{true}, 7},
		{"member behind the precondition", true, 0, 9, map[bool]int64{false: 9, true: 7}, []bool{true, false}, 9},
		{"missing on the member", true, 0, 0, map[bool]int64{false: 3}, []bool{true, false}, 3},
		{"a retry", true, 1, 0, map[bool]int64{false: 7, true: 7}, []bool{false}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordKV{mod: tc.mod}
			s := &Store{c: &clientv3.Client{KV: rec}, kv: &sessionKV{KV: rec, oneMember: tc.oneMember}}
			resp, _, err := s.readForUpdate(context.Background(), "/k", tc.precondition, tc.attempt)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rec.got, tc.want) {
				t.Errorf("serializable reads: got %v, want %v", rec.got, tc.want)
			}
			if len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision != tc.wantMod {
				t.Errorf("read %v, want mod revision %d", resp.Kvs, tc.wantMod)
			}
		})
	}
}

// TestLoneVoterReads: the only voter of its cluster has applied every
// write it acknowledged, so a session reads its copy from the first
// read, and so does an update (once, whatever it finds).
func TestLoneVoterReads(t *testing.T) {
	alone := true
	rec := &recordKV{mod: map[bool]int64{true: 7}}
	s := &Store{c: &clientv3.Client{KV: rec}, kv: &sessionKV{KV: rec}}
	s.ReadsFromOneMember(func() bool { return alone })
	ctx := WithReadSession(context.Background())
	s.kv.Get(ctx, "/a")
	s.kv.Get(withAttempt(ctx, 1), "/b")
	s.readForUpdate(context.Background(), "/c", 9, 0)
	if want := []bool{true, true, true}; !slices.Equal(rec.got, want) {
		t.Errorf("alone: serializable reads: got %v, want %v", rec.got, want)
	}
	// Joined by a second voter: back to a session's linearizable first
	// read.
	alone, rec.got = false, nil
	ctx = WithReadSession(context.Background())
	s.kv.Get(ctx, "/a")
	s.kv.Get(ctx, "/b")
	if want := []bool{false, true}; !slices.Equal(rec.got, want) {
		t.Errorf("with a peer: serializable reads: got %v, want %v", rec.got, want)
	}
}
