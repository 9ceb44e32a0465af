// An example backend behind session-sidecar, using only Go's standard library.
//
// The sidecar owns the cookies; this server only ever sees and writes JSON:
//
//   - Reading: every request carries X-Session (a compact JSON object, {} when there is no
//     session) and X-Session-Status (absent, valid, expired or invalid). The sidecar removes
//     any copy a client sent, so both can be trusted.
//   - Writing: answer with "X-Set-Session: <JSON object>" to replace the session, or with {}
//     or null to clear it. The sidecar turns it into cookies and never forwards it.
//
// Run it with `HOST=127.0.0.1 PORT=8003 go run .`; it stops cleanly on SIGTERM.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf16"
)

const (
	backendName = "go"
	chunkSize   = 64 * 1024
	// A 48 KB X-Session beside a 60 KB Cookie must fit; Go's default limit is 1 MB already.
	maxHeaderBytes  = 1 << 20
	maxGrowKB       = 4096
	maxSleepSeconds = 600
)

// Bytes that cannot appear in a header value (RFC 9110 section 5.5): controls other than tab.
var unsendableInHeader = regexp.MustCompile("[\x00-\x08\x0a-\x1f\x7f]")

type jsonObject = map[string]any

// marshal is json.Marshal without the escaping of <, > and & meant for HTML pages.
func marshal(value any) ([]byte, error) {
	var buf bytes.Buffer
	encoder := json.NewEncoder(&buf)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(value); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// dumpSession serialises for X-Set-Session: compact and ASCII-only, as header values must be.
func dumpSession(session any) (string, error) {
	data, err := marshal(session)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	for _, r := range string(data) {
		switch {
		case r < 0x80:
			out.WriteRune(r)
		case r > 0xffff:
			hi, lo := utf16.EncodeRune(r)
			fmt.Fprintf(&out, `\u%04x\u%04x`, hi, lo)
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
	}
	return out.String(), nil
}

// readSession returns the session from X-Session, or an empty one if it is missing or unreadable.
func readSession(r *http.Request) jsonObject {
	session := jsonObject{}
	if err := json.Unmarshal([]byte(r.Header.Get("X-Session")), &session); err != nil || session == nil {
		return jsonObject{}
	}
	return session
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	w.Write(data)
}

func badRequest(w http.ResponseWriter, message string) {
	writeJSON(w, http.StatusBadRequest, jsonObject{"error": message})
}

func readJSONObject(r *http.Request) (jsonObject, bool) {
	var body jsonObject
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body == nil {
		return nil, false
	}
	return body, true
}

func intParam(r *http.Request, name string, fallback, maximum int64) (int64, bool) {
	raw, present := r.URL.Query()[name]
	if !present {
		return fallback, true
	}
	value, err := strconv.ParseInt(raw[0], 10, 64)
	return value, err == nil && value >= 0 && value <= maximum
}

func healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}

func whoami(w http.ResponseWriter, r *http.Request) {
	var rawSession, session, status, cookie any
	if values, ok := r.Header["X-Session"]; ok {
		rawSession = values[0]
		if json.Unmarshal([]byte(values[0]), &session) != nil {
			session = nil
		}
	}
	if values, ok := r.Header["X-Session-Status"]; ok {
		status = values[0]
	}
	if values, ok := r.Header["Cookie"]; ok {
		cookie = strings.Join(values, "; ")
	}
	// Go moves Host and Transfer-Encoding out of r.Header; put them back.
	headers := map[string]string{"host": r.Host}
	if len(r.TransferEncoding) > 0 {
		headers["transfer-encoding"] = strings.Join(r.TransferEncoding, ", ")
	}
	for name, values := range r.Header {
		headers[strings.ToLower(name)] = strings.Join(values, ", ")
	}
	writeJSON(w, http.StatusOK, jsonObject{
		"backend":     backendName,
		"path":        r.RequestURI,
		"method":      r.Method,
		"session":     session,
		"session_raw": rawSession,
		"status":      status,
		"cookie":      cookie,
		"headers":     headers,
	})
}

func replaceSession(w http.ResponseWriter, r *http.Request) {
	body, ok := readJSONObject(r)
	if !ok {
		badRequest(w, "body must be a JSON object")
		return
	}
	encoded, err := dumpSession(body)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	w.Header().Set("X-Set-Session", encoded)
	writeJSON(w, http.StatusOK, jsonObject{"ok": true})
}

func mergeSession(w http.ResponseWriter, r *http.Request) {
	body, ok := readJSONObject(r)
	if !ok {
		badRequest(w, "body must be a JSON object")
		return
	}
	merged := readSession(r)
	for key, value := range body {
		merged[key] = value
	}
	encoded, err := dumpSession(merged)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	w.Header().Set("X-Set-Session", encoded)
	writeJSON(w, http.StatusOK, merged)
}

func clearSession(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Set-Session", "{}")
	writeJSON(w, http.StatusOK, jsonObject{"ok": true})
}

func growSession(w http.ResponseWriter, r *http.Request) {
	kb, ok := intParam(r, "kb", 1, maxGrowKB)
	if !ok {
		badRequest(w, fmt.Sprintf("kb must be an integer from 0 to %d", maxGrowKB))
		return
	}
	key := "blob"
	if values, present := r.URL.Query()["key"]; present {
		key = values[0]
	}
	// 768 random bytes are exactly 1024 base64 characters, none of which compress.
	random := make([]byte, 768*kb)
	if _, err := rand.Read(random); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	session := readSession(r)
	session[key] = base64.URLEncoding.EncodeToString(random)
	encoded, err := dumpSession(session)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	w.Header().Set("X-Set-Session", encoded)
	writeJSON(w, http.StatusOK, jsonObject{"bytes": len(encoded)})
}

func rawSetSession(w http.ResponseWriter, r *http.Request) {
	values := r.URL.Query()["value"]
	if len(values) == 0 {
		badRequest(w, "value is required")
		return
	}
	for _, value := range values {
		if unsendableInHeader.MatchString(value) {
			badRequest(w, "value cannot be sent in a header")
			return
		}
	}
	// One header line per ?value=. Go trims spaces around a value, as RFC 9110 readers do.
	w.Header()["X-Set-Session"] = values
	writeJSON(w, http.StatusOK, jsonObject{"ok": true})
}

func setCookies(w http.ResponseWriter, r *http.Request) {
	w.Header().Add("Set-Cookie", "a=1; Path=/")
	w.Header().Add("Set-Cookie", "b=2; Path=/; HttpOnly")
	// The sidecar owns session.* cookies and must drop this one.
	w.Header().Add("Set-Cookie", "session.0=evil; Path=/")
	writeJSON(w, http.StatusOK, jsonObject{"ok": true})
}

func slow(w http.ResponseWriter, r *http.Request) {
	seconds := 1.0
	if raw := r.URL.Query().Get("seconds"); raw != "" {
		var err error
		if seconds, err = strconv.ParseFloat(raw, 64); err != nil {
			seconds = -1
		}
	}
	if !(seconds >= 0 && seconds <= maxSleepSeconds) {
		badRequest(w, fmt.Sprintf("seconds must be from 0 to %d", maxSleepSeconds))
		return
	}
	select {
	case <-time.After(time.Duration(seconds * float64(time.Second))):
		writeJSON(w, http.StatusOK, jsonObject{"slept": seconds})
	case <-r.Context().Done(): // The client went away.
	}
}

// echo spools the body to a temporary file, then streams it back. Go 1.19's HTTP/1 server
// cannot keep reading a request once the response has started (Go 1.21 added
// http.ResponseController.EnableFullDuplex), so a chunk-by-chunk copy would lose data.
func echo(w http.ResponseWriter, r *http.Request) {
	spool, err := os.CreateTemp("", "echo-*")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	size, err := io.CopyBuffer(spool, r.Body, make([]byte, chunkSize))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	io.CopyBuffer(w, spool, make([]byte, chunkSize))
}

func upload(w http.ResponseWriter, r *http.Request) {
	digest := sha256.New()
	size, err := io.CopyBuffer(digest, r.Body, make([]byte, chunkSize))
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, jsonObject{"bytes": size, "sha256": hex.EncodeToString(digest.Sum(nil))})
}

func download(w http.ResponseWriter, r *http.Request) {
	size, ok := intParam(r, "bytes", 0, 1<<40)
	if !ok {
		badRequest(w, "bytes must be a non-negative integer")
		return
	}
	piece := make([]byte, chunkSize)
	for i := range piece {
		piece[i] = byte(i)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	for remaining := size; remaining > 0; remaining -= chunkSize {
		part := piece
		if remaining < chunkSize {
			part = piece[:remaining]
		}
		if _, err := w.Write(part); err != nil { // Write blocks while the client is slow.
			return
		}
	}
}

// reset promises a megabyte, sends a kilobyte and hangs up: an upstream dying mid-body.
func reset(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", "1000000")
	w.Write(bytes.Repeat([]byte("x"), 1000))
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler) // The server closes the connection without logging.
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusNotFound, jsonObject{"error": "not found"})
}

type route struct{ method, path string }

var routes = map[route]http.HandlerFunc{
	{"GET", "/healthz"}:         healthz,
	{"GET", "/whoami"}:          whoami,
	{"POST", "/session"}:        replaceSession,
	{"POST", "/session/merge"}:  mergeSession,
	{"POST", "/session/clear"}:  clearSession,
	{"GET", "/session/grow"}:    growSession,
	{"GET", "/raw-set-session"}: rawSetSession,
	{"GET", "/set-cookies"}:     setCookies,
	{"GET", "/slow"}:            slow,
	{"POST", "/echo"}:           echo,
	{"POST", "/upload"}:         upload,
	{"GET", "/download"}:        download,
	{"GET", "/reset"}:           reset,
}

func handle(w http.ResponseWriter, r *http.Request) {
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	if handler, ok := routes[route{method, r.URL.Path}]; ok {
		handler(w, r)
	} else if method == http.MethodGet {
		whoami(w, r) // Any other GET says who it reached.
	} else {
		notFound(w, r)
	}
}

func main() {
	host := getenv("HOST", "127.0.0.1")
	port := getenv("PORT", "8003")
	server := &http.Server{
		Addr:              net.JoinHostPort(host, port),
		Handler:           http.HandlerFunc(handle),
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: 30 * time.Second,
	}
	listener, err := net.Listen("tcp", server.Addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s:%s\n", host, port)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		// Let requests in flight finish for a moment, then drop them.
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if server.Shutdown(shutdownCtx) != nil {
			server.Close()
		}
	}()
	if err := server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-stopped
}

func getenv(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
