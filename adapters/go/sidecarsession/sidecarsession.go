// Package sidecarsession reads and writes sessions for net/http handlers behind
// session-sidecar. It uses the standard library only; copy this file into your module.
//
// The proxy sends the session as a compact JSON object in the X-Session request header
// (trusted: the proxy strips any copy a client sent) with X-Session-Status. Only a session
// whose status is valid is read: for every other status (absent, expired, invalid, revoked, or
// one added later) and without one, the session is empty, whatever X-Session holds. Read
// decodes it into a map with json.Number for numbers, so 12345678901234567890 survives;
// ReadInto decodes it into a value of your own type.
//
// To write it, wrap your handler in Handler and change the Session that FromRequest returns:
//
//	http.Handle("/", sidecarsession.Handler(app))
//	func app(w http.ResponseWriter, r *http.Request) {
//		s := sidecarsession.FromRequest(r)
//		s.Set("user", "alice")
//		...
//	}
//
// Just before the response head is written, the session is compared with what was read, key by
// key, by its JSON (so a change inside a value counts), and only if something changed one
// header is set: X-Set-Session: {} for an emptied session; X-Patch-Session, an RFC 7396 merge
// patch of just the changed keys, when some keys changed; a full X-Set-Session when a merge
// patch cannot say it (a value set to nil) or would be no shorter. JSON is written ASCII only,
// non-ASCII as \uXXXX (a surrogate pair above U+FFFF): encoding/json writes raw UTF-8.
// A response that already carries X-Set-Session or X-Patch-Session is left alone.
package sidecarsession

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"unicode/utf8"
)

// Header names of the proxy's contract (docs/backends.md).
const (
	SessionHeader  = "X-Session"
	StatusHeader   = "X-Session-Status"
	MigratedHeader = "X-Session-Migrated"
	SetHeader      = "X-Set-Session"
	PatchHeader    = "X-Patch-Session"
)

// Status is the proxy's verdict on the request's session cookies.
type Status string

// Every status but StatusValid reads as an empty session: logged out.
const (
	StatusAbsent  Status = "absent"
	StatusValid   Status = "valid"
	StatusExpired Status = "expired"
	StatusInvalid Status = "invalid"
)

// ErrNotObject is returned when X-Session is not a JSON object (not behind the proxy?).
var ErrNotObject = errors.New("sidecarsession: X-Session is not a JSON object")

// Read returns the request's session (never nil; empty unless the status is StatusValid), its
// status, and an error if the status is valid but X-Session is not a JSON object. Numbers are
// json.Number.
func Read(r *http.Request) (map[string]any, Status, error) {
	var values map[string]any
	status, err := ReadInto(r, &values)
	if err != nil || values == nil {
		return map[string]any{}, status, err
	}
	return values, status, nil
}

// ReadInto decodes the request's session into v (a pointer), with json.Number for numbers
// held in interface values, and returns its status. A missing X-Session, or any status but
// StatusValid, decodes as {}.
func ReadInto(r *http.Request, v any) (Status, error) {
	status := Status(r.Header.Get(StatusHeader))
	if status == "" {
		status = StatusAbsent
	}
	raw := r.Header.Get(SessionHeader)
	if raw == "" || status != StatusValid {
		raw = "{}"
	}
	if err := decode([]byte(raw), v); err != nil {
		return status, fmt.Errorf("%w: %v", ErrNotObject, err)
	}
	return status, nil
}

func decode(data []byte, v any) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errors.New("want an object")
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	if err := decoder.Decode(v); err != nil {
		return err
	}
	if decoder.More() {
		return errors.New("data after the object")
	}
	return nil
}

// Session is one request's session: the values read, changed in place, and what was read, to
// compare with when the response head is written. It is not safe for concurrent use.
type Session struct {
	// Status is the proxy's verdict; Migrated is true when the proxy read the session from a
	// legacy Flask cookie (migrate:).
	Status   Status
	Migrated bool
	values   map[string]any
	original map[string]any // decoded again, never handed out
}

// NewSession reads the request's session. A malformed X-Session with StatusValid reads as an
// empty session with StatusInvalid.
func NewSession(r *http.Request) *Session {
	values, status, err := Read(r)
	original, _, _ := Read(r)
	if err != nil {
		status = StatusInvalid
	}
	return &Session{
		Status:   status,
		Migrated: r.Header.Get(MigratedHeader) != "",
		values:   values,
		original: original,
	}
}

// Get returns the value of key (json.Number for numbers, map[string]any for objects) or nil.
func (s *Session) Get(key string) any { return s.values[key] }

// Set sets key to v, any value encoding/json can write.
func (s *Session) Set(key string, v any) { s.values[key] = v }

// Delete removes key.
func (s *Session) Delete(key string) { delete(s.values, key) }

// Clear removes every key: the response clears the session (the user is logged out).
func (s *Session) Clear() {
	for key := range s.values {
		delete(s.values, key)
	}
}

// Values is the live map: changes to it, nested ones included, are written back.
func (s *Session) Values() map[string]any { return s.values }

// WriteHeaders sets X-Patch-Session or X-Set-Session on h if the session changed, unless h
// already has one of them. Handler calls it for you; call it yourself without Handler.
func (s *Session) WriteHeaders(h http.Header) error {
	if h.Get(SetHeader) != "" || h.Get(PatchHeader) != "" {
		return nil
	}
	name, value, err := sessionHeader(s.original, s.values)
	if err != nil || name == "" {
		return err
	}
	h.Set(name, value)
	return nil
}

// sessionHeader is the header that turns old into current, or "" when they are the same.
func sessionHeader(old, current map[string]any) (string, string, error) {
	encoded, err := encodeASCII(current)
	if err != nil {
		return "", "", err
	}
	var now map[string]any
	if err := decode(encoded, &now); err != nil {
		return "", "", err
	}
	if len(now) == 0 {
		if len(old) == 0 {
			return "", "", nil
		}
		return SetHeader, "{}", nil
	}
	patch, ok := mergePatchDiff(old, now)
	if ok && len(patch) == 0 {
		return "", "", nil
	}
	if ok {
		patchJSON, err := encodeASCII(patch)
		if err != nil {
			return "", "", err
		}
		if len(patchJSON) < len(encoded) {
			return PatchHeader, string(patchJSON), nil
		}
	}
	return SetHeader, string(encoded), nil
}

// mergePatchDiff is an RFC 7396 merge patch that turns old into now (both as decoded by
// decode), and false if none can: a member that is an object on both sides is diffed in turn
// (a whole object would merge, not replace), and a null kept as a value cannot be said.
func mergePatchDiff(old, now map[string]any) (map[string]any, bool) {
	patch := map[string]any{}
	for name := range old {
		if _, kept := now[name]; !kept {
			patch[name] = nil
		}
	}
	for name, value := range now {
		before, had := old[name]
		if had && sameJSON(before, value) {
			continue
		}
		valueObject, isObject := value.(map[string]any)
		beforeObject, wasObject := before.(map[string]any)
		switch {
		case had && isObject && wasObject:
			inner, ok := mergePatchDiff(beforeObject, valueObject)
			if !ok {
				return nil, false
			}
			patch[name] = inner
		case value == nil || (isObject && holdsMemberNull(valueObject)):
			return nil, false
		default:
			patch[name] = value
		}
	}
	return patch, true
}

func holdsMemberNull(object map[string]any) bool {
	for _, v := range object {
		if inner, ok := v.(map[string]any); v == nil || (ok && holdsMemberNull(inner)) {
			return true
		}
	}
	return false
}

func sameJSON(a, b any) bool {
	x, errX := encodeASCII(a)
	y, errY := encodeASCII(b)
	return errX == nil && errY == nil && bytes.Equal(x, y)
}

// encodeASCII is compact JSON with every non-ASCII rune as \uXXXX, as header values must be.
// Outside strings JSON is ASCII, so escaping every rune of 0x80 and up is exact.
func encodeASCII(v any) ([]byte, error) {
	var buf bytes.Buffer
	encoder := json.NewEncoder(&buf)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(v); err != nil {
		return nil, err
	}
	data := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	out := make([]byte, 0, len(data))
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		switch {
		case r < utf8.RuneSelf:
			out = append(out, data[0])
		case r > 0xFFFF:
			r -= 0x10000
			out = appendEscape(out, 0xD800+(r>>10))
			out = appendEscape(out, 0xDC00+(r&0x3FF))
		default: // encoding/json already wrote invalid UTF-8 as U+FFFD
			out = appendEscape(out, r)
		}
		data = data[size:]
	}
	return out, nil
}

func appendEscape(out []byte, unit rune) []byte {
	const hex = "0123456789abcdef"
	return append(out, '\\', 'u', hex[unit>>12&0xF], hex[unit>>8&0xF], hex[unit>>4&0xF], hex[unit&0xF])
}

type contextKey struct{}

// Handler reads the session of every request into a Session (see FromRequest) and writes it
// back, if it changed, just before the response head.
func Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		session := NewSession(r)
		writer := &responseWriter{ResponseWriter: w, session: session}
		next.ServeHTTP(writer, r.WithContext(context.WithValue(r.Context(), contextKey{}, session)))
		if !writer.wroteHeader {
			writer.WriteHeader(http.StatusOK)
		}
	})
}

// FromRequest returns the Session that Handler made for r, or nil outside Handler.
func FromRequest(r *http.Request) *Session {
	session, _ := r.Context().Value(contextKey{}).(*Session)
	return session
}

// responseWriter writes the session headers once, before the head.
type responseWriter struct {
	http.ResponseWriter
	session     *Session
	wroteHeader bool
	failed      bool // the session could not be encoded: a 500 was sent instead
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.wroteHeader = true
		if err := w.session.WriteHeaders(w.Header()); err != nil {
			// A value encoding/json cannot write: the session stays as it was, and the
			// handler's response is replaced by a 500 rather than sent without its session.
			w.failed = true
			http.Error(w.ResponseWriter, "session not writable: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	if !w.failed {
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.failed {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes http.Flusher through, writing the head first.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if flusher, ok := w.ResponseWriter.(http.Flusher); ok {
		flusher.Flush()
	}
}

// Hijack passes http.Hijacker through; the session is not written on a hijacked connection.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hijacker, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("sidecarsession: the ResponseWriter cannot be hijacked")
	}
	w.wroteHeader = true
	return hijacker.Hijack()
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
