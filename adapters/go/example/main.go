// An example net/http app using sidecarsession, also driven by tests/integration/test_adapters.py.
//
// Routes: GET /session shows what the app read; POST /update changes the session with a JSON
// body {"clear": true, "delete": [k], "set": {k: v}, "append": {k: item}, "nested": [[k, sub, v]]};
// POST /raw-set writes its body as X-Set-Session itself (the adapter leaves it alone). Every
// response says in X-Adapter-Wrote which session header was sent ("X-Patch-Session {...}",
// "X-Set-Session {...}" or "none"). Run: HOST=127.0.0.1 PORT=8003 go run .
package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/session-sidecar/session-sidecar/adapters/go/sidecarsession"
)

type update struct {
	Clear  bool                 `json:"clear"`
	Delete []string             `json:"delete"`
	Set    map[string]any       `json:"set"`
	Append map[string]any       `json:"append"`
	Nested [][3]json.RawMessage `json:"nested"`
}

func showSession(w http.ResponseWriter, r *http.Request) {
	s := sidecarsession.FromRequest(r)
	writeJSON(w, map[string]any{
		"status":   s.Status,
		"migrated": s.Migrated,
		"raw":      r.Header.Get(sidecarsession.SessionHeader),
		"session":  s.Values(),
	})
}

func updateSession(w http.ResponseWriter, r *http.Request) {
	var u update
	decoder := json.NewDecoder(r.Body)
	decoder.UseNumber()
	if err := decoder.Decode(&u); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s := sidecarsession.FromRequest(r)
	if u.Clear {
		s.Clear()
	}
	for _, key := range u.Delete {
		s.Delete(key)
	}
	for key, value := range u.Set {
		s.Set(key, value)
	}
	for key, item := range u.Append { // changes a value in place: no Set needed
		list, _ := s.Get(key).([]any)
		s.Values()[key] = append(list, item)
	}
	for _, change := range u.Nested { // [key, sub, value]: s.Get(key).(map)[sub] = value
		var key, sub string
		var value any
		_ = json.Unmarshal(change[0], &key)
		_ = json.Unmarshal(change[1], &sub)
		valueDecoder := json.NewDecoder(bytes.NewReader(change[2]))
		valueDecoder.UseNumber()
		_ = valueDecoder.Decode(&value)
		if inner, ok := s.Get(key).(map[string]any); ok {
			inner[sub] = value
		}
	}
	writeJSON(w, map[string]any{"ok": true})
}

func rawSet(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set(sidecarsession.SetHeader, string(body))
	writeJSON(w, map[string]any{"ok": true})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// reportWrites sits outside sidecarsession.Handler and copies the session header it wrote
// into X-Adapter-Wrote, which the proxy passes on (it never passes the session headers).
func reportWrites(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&reportingWriter{ResponseWriter: w}, r)
	})
}

type reportingWriter struct {
	http.ResponseWriter
	reported bool
}

func (w *reportingWriter) WriteHeader(code int) {
	if !w.reported {
		w.reported = true
		wrote := "none"
		for _, name := range []string{sidecarsession.PatchHeader, sidecarsession.SetHeader} {
			if value := w.Header().Get(name); value != "" {
				wrote = name + " " + value
			}
		}
		w.Header().Set("X-Adapter-Wrote", wrote)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *reportingWriter) Write(b []byte) (int, error) {
	if !w.reported {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/session", showSession)
	mux.HandleFunc("/update", updateSession)
	mux.HandleFunc("/raw-set", rawSet)
	addr := net.JoinHostPort(getenv("HOST", "127.0.0.1"), getenv("PORT", "8003"))
	log.Printf("listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, reportWrites(sidecarsession.Handler(mux))))
}

func getenv(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
