package cityadmin

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/campusedge/campusedge/edge/httpapi"
	"github.com/campusedge/campusedge/edge/media"
	"github.com/campusedge/campusedge/sync/catalog"
)

func (a *API) listCatalogue(w http.ResponseWriter, r *http.Request, _ Principal) {
	if a.cat == nil {
		httpapi.WriteError(w, http.StatusNotImplemented, "no_catalogue", "this hub serves no catalogue")
		return
	}
	items := []media.Item{}
	var since uint64
	for len(items) < maxCatalogue {
		ch, err := a.cat.Changes(since, media.MaxPageItems)
		if err != nil {
			a.storeErr(w, "catalogue", err)
			return
		}
		items = append(items, ch.Items...)
		if !ch.More {
			break
		}
		if since, err = media.ParseCursor(ch.Next); err != nil {
			a.storeErr(w, "catalogue", err)
			return
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
}

// ItemEdit changes an item's descriptive fields; nil fields stay.
type ItemEdit struct {
	Title   *string `json:"title"`
	Subject *string `json:"subject"`
	Grade   *string `json:"grade"`
}

func (a *API) editItem(w http.ResponseWriter, r *http.Request, p Principal) {
	if a.cat == nil {
		httpapi.WriteError(w, http.StatusNotImplemented, "no_catalogue", "this hub serves no catalogue")
		return
	}
	var req ItemEdit
	if !httpapi.DecodeJSON(w, r, maxJSONBody, &req) {
		return
	}
	id := r.PathValue("id")
	it, err := a.cat.Get(id)
	if err != nil {
		if errors.Is(err, catalog.ErrNotFound) {
			httpapi.WriteError(w, http.StatusNotFound, "not_found", err.Error())
			return
		}
		a.storeErr(w, "item "+id, err)
		return
	}
	for _, f := range []struct {
		v   *string
		dst *string
	}{{req.Title, &it.Title}, {req.Subject, &it.Subject}, {req.Grade, &it.Grade}} {
		if f.v != nil {
			*f.dst = strings.TrimSpace(*f.v)
		}
	}
	saved, err := a.cat.Put(it)
	if errors.Is(err, media.ErrInvalid) {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_item", err.Error())
		return
	} else if err != nil {
		a.storeErr(w, "item "+id, err)
		return
	}
	a.log.Info("catalogue item edited", "id", id, "by", p.User)
	httpapi.WriteJSON(w, http.StatusOK, saved)
}

// importItem registers the request body as a catalogue item titled after
// ?name= (its extension gives the type): cityhub import FOLDER sends each
// file this way while the hub runs, so adding lessons stops nothing.
func (a *API) importItem(w http.ResponseWriter, r *http.Request, p Principal) {
	if a.cat == nil {
		httpapi.WriteError(w, http.StatusNotImplemented, "no_catalogue", "this hub serves no catalogue")
		return
	}
	name := r.URL.Query().Get("name")
	if name == "" || len(name) > 255 || strings.ContainsAny(name, "/\\\x00") {
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_name", "?name= must be the file's name (1-255 bytes, no path)")
		return
	}
	if r.ContentLength > media.MaxItemSize {
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, httpapi.CodeBodyTooLarge, "a catalogue item is at most "+strconv.FormatInt(media.MaxItemSize, 10)+" bytes")
		return
	}
	if r.ContentLength > 0 {
		if err := a.cat.Room(r.ContentLength); err != nil {
			httpapi.WriteError(w, http.StatusInsufficientStorage, "disk_full", err.Error()+"; free space on the hub first")
			return
		}
	}
	it, err := a.cat.ImportFile(name, r.Body)
	switch {
	case errors.Is(err, media.ErrInvalid):
		httpapi.WriteError(w, http.StatusBadRequest, "invalid_item", err.Error())
		return
	case err != nil:
		a.storeErr(w, "import "+name, err)
		return
	}
	a.log.Info("catalogue item imported", "id", it.ID, "name", name, "bytes", it.Size, "by", p.User)
	httpapi.WriteJSON(w, http.StatusCreated, it)
}
