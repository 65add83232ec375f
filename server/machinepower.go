package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/power"
	"hearth.dev/hearth/server/auth"
)

// A machine's power through the API, for the dashboard (the CLI's `hearth
// machine power` drives the BMC itself):
//
//	POST /apis/hearth.dev/v1alpha1/machines/NAME/power[?dryRun=All] {"action": "on"|"off"|"cycle"|"status", "networkBoot": bool}
//
// The caller needs the right to change the Machine and to read every
// Secret its power settings name, which is exactly what the CLI's way
// needs (only cluster admins read Secrets); the server then reads them
// and drives the BMC, plug or Wake-on-LAN from where it runs. Each action
// is an event on the machine's timeline, as the CLI's are.

// machinePower handles POST machines/NAME/power.
func (s *Server) machinePower(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	name := r.PathValue("name")
	k, _ := api.KindByName("Machine")
	t := target{kind: k, name: name}
	if err := auth.Authorize(p, t.request(auth.Update)); err != nil {
		return err
	}
	if r.Method != http.MethodPost {
		return methodNotAllowed(r)
	}
	// A dry run does everything but reach the machine: authorization,
	// the request's checks, the Secrets, the driver's settings.
	if _, err := withDryRun(r); err != nil {
		return err
	}
	dry := r.URL.Query().Has("dryRun")
	data, err := readBody(r)
	if err != nil {
		return err
	}
	var req api.PowerRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return api.NewBadRequest("the body is not a power request: %v", err)
	}
	reasons := map[string]string{"on": "PowerOn", "off": "PowerOff", "cycle": "PowerCycle", "status": ""}
	reason, ok := reasons[req.Action]
	if !ok {
		return api.NewInvalid("Machine", name, api.FieldErrors{{Field: "action", Detail: "want on, off, cycle or status, not " + `"` + req.Action + `"`}})
	}
	obj, err := s.store.Get(r.Context(), k, "", name)
	if err != nil {
		return err
	}
	m := obj.(*api.Machine)
	sk, _ := api.KindByName("Secret")
	resolved, err := power.ResolveSecrets(r.Context(), m, func(ctx context.Context, secret string) (*api.Secret, error) {
		// The caller's own right to the Secret, as for the CLI.
		if err := auth.Authorize(p, auth.Request{Verb: auth.Get, Kind: sk, Name: secret}); err != nil {
			return nil, err
		}
		o, err := s.store.Get(ctx, sk, "", secret)
		if err != nil {
			return nil, err
		}
		return o.(*api.Secret), nil
	})
	var st *api.Status
	if errors.As(err, &st) {
		return st
	}
	if err != nil {
		return api.NewBadRequest("%v", err)
	}
	d, err := power.For(resolved, power.Options{IPMITool: s.cfg.Sensors.IPMITool})
	if err != nil {
		return api.NewBadRequest("%v", err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	resp := api.PowerResponse{Kind: "PowerResponse", Machine: name, Action: req.Action, Driver: fmt.Sprint(d)}
	if dry {
		writeJSON(w, http.StatusOK, resp)
		return nil
	}
	if reason != "" {
		if req.NetworkBoot {
			err = d.BootOnceFromNetwork(ctx)
		}
		if err == nil {
			switch req.Action {
			case "on":
				err = d.On(ctx)
			case "off":
				err = d.Off(ctx)
			case "cycle":
				err = d.Cycle(ctx)
			}
		}
		if c, cerr := s.InternalClient(); cerr == nil && !errors.Is(err, power.ErrUnsupported) {
			rec := client.NewRecorder(c, "hearth-server")
			msg := reason + " requested by " + p.Name + " through the API"
			if req.NetworkBoot {
				msg += ", booting from the network once"
			}
			if err != nil {
				rec.Eventf(context.WithoutCancel(r.Context()), m, api.EventWarning, reason+"Failed", "%s: %v", msg, err)
			} else {
				rec.Eventf(context.WithoutCancel(r.Context()), m, api.EventNormal, reason, "%s", msg)
			}
		}
		if err != nil {
			return api.NewUnavailable("%v", err)
		}
	}
	if state, err := d.Status(ctx); err == nil {
		resp.State = state.API()
	} else if req.Action == "status" {
		return api.NewUnavailable("%v", err)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
