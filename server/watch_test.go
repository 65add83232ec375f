package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/server/store"
)

// TestWatchFlushesPastFilteredEvents: an event a filtered watcher sees is
// sent at once even when events it does not see follow right behind it
// (before, it waited in the buffer for the watcher's next event or
// bookmark: seconds, for an agent whose VMs are few among many).
func TestWatchFlushesPastFilteredEvents(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	k, _ := api.KindByName("Network")
	for round := range 5 {
		_, rv, err := env.Admin.List(ctx, "Network", "lab", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		events, _, err := env.Admin.WatchOnce(wctx, "Network", "lab", client.ListOptions{ResourceVersion: rv, LabelSelector: "seen=yes"})
		if err != nil {
			t.Fatal(err)
		}
		// One revision: the watched network first, then many others,
		// so that they wait in the watch's queue behind it.
		var ops []clientv3.Op
		for i := range 100 {
			n := &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"},
				Metadata: api.ObjectMeta{Name: fmt.Sprintf("r%d-n%d", round, i), Tenant: "lab", UID: fmt.Sprintf("uid-%d-%d", round, i)}}
			if i == 0 {
				n.Metadata.Labels = map[string]string{"seen": "yes"}
			}
			data, _ := json.Marshal(n)
			ops = append(ops, clientv3.OpPut(store.Key(k, "lab", n.Metadata.Name), string(data)))
		}
		sent := time.Now()
		if _, err := env.Server.Etcd().Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			if ev.Type != "ADDED" || ev.Object.GetMetadata().Name != fmt.Sprintf("r%d-n0", round) {
				t.Fatalf("got %s %v", ev.Type, ev.Object)
			}
			if took := time.Since(sent); took > time.Second {
				t.Fatalf("round %d: the event took %s to arrive", round, took)
			}
		case <-time.After(time.Second):
			t.Fatalf("round %d: the event the watcher sees did not arrive within a second", round)
		}
		cancel()
	}
}

// TestListRawMatchesDecoded: a list passed through as stored (an admin,
// no field selector) holds the same objects, field for field, as the list
// decoded and encoded again (forced here by a field selector every object
// matches), for every kind; with a label selector too.
func TestListRawMatchesDecoded(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	for _, k := range api.Kinds() {
		tenant := ""
		if k.Scope != api.ClusterScoped {
			tenant = "lab"
		}
		obj := servertest.Example(k.Kind, tenant)
		obj.GetMetadata().Labels = map[string]string{"pick": "me"}
		if k.Kind == "Tenant" {
			obj.GetMetadata().Name = "listed"
		}
		if _, err := env.Admin.Create(ctx, obj); err != nil && !api.IsAlreadyExists(err) {
			t.Fatalf("%s: %v", k.Kind, err)
		}
		for _, labels := range []string{"", "pick=me"} {
			get := func(fields string) []any {
				t.Helper()
				q := url.Values{}
				if fields != "" {
					q.Set("fieldSelector", fields)
				}
				if labels != "" {
					q.Set("labelSelector", labels)
				}
				var out struct {
					Items []any `json:"items"`
				}
				path := api.CollectionPath(k, tenant)
				if err := env.Admin.Do(ctx, http.MethodGet, path+"?"+q.Encode(), nil, &out); err != nil {
					t.Fatalf("%s: %v", k.Kind, err)
				}
				return out.Items
			}
			raw, decoded := get(""), get("metadata.name!=")
			if len(raw) == 0 || !reflect.DeepEqual(raw, decoded) {
				t.Errorf("%s (labels %q): stored list\n%v\ndecoded list\n%v", k.Kind, labels, servertest.JSON(raw), servertest.JSON(decoded))
			}
		}
	}
}
