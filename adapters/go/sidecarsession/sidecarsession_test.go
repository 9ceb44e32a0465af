package sidecarsession

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestEncodeASCIIEscapesEveryNonASCIIRune(t *testing.T) {
	got, err := encodeASCII(map[string]any{"k": "Zoë 日本 😀 \u2028 <&>", "ключ": 1})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"k":"Zo\u00eb \u65e5\u672c \ud83d\ude00 \u2028 <&>","\u043a\u043b\u044e\u0447":1}`
	if string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestEncodeASCIIWritesInvalidUTF8AsReplacementCharacter(t *testing.T) {
	got, _ := encodeASCII("a\xffb")
	if string(got) != `"a\ufffdb"` {
		t.Fatalf("got %s", got)
	}
}

func TestReadKeepsLargeIntegersExact(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set(SessionHeader, `{"big":12345678901234567890}`)
	r.Header.Set(StatusHeader, "valid")
	values, status, err := Read(r)
	if err != nil || status != StatusValid || values["big"] != json.Number("12345678901234567890") {
		t.Fatalf("got %v %v %v", values, status, err)
	}
}

func TestReadWithoutHeadersIsAnEmptyAbsentSession(t *testing.T) {
	values, status, err := Read(httptest.NewRequest("GET", "/", nil))
	if err != nil || status != StatusAbsent || values == nil || len(values) != 0 {
		t.Fatalf("got %v %v %v", values, status, err)
	}
}

func TestReadBelievesXSessionOnlyWhenTheStatusIsValid(t *testing.T) {
	for _, status := range []string{"", "absent", "expired", "invalid", "revoked", "unheard-of", "Valid"} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set(SessionHeader, `{"user":"root"}`)
		if status != "" {
			r.Header.Set(StatusHeader, status)
		}
		values, _, err := Read(r)
		if err != nil || values == nil || len(values) != 0 {
			t.Errorf("status %q: got %v %v", status, values, err)
		}
		var typed struct {
			User string `json:"user"`
		}
		if _, err := ReadInto(r, &typed); err != nil || typed.User != "" {
			t.Errorf("status %q: ReadInto got %+v %v", status, typed, err)
		}
		if s := NewSession(r); len(s.Values()) != 0 || s.Get("user") != nil {
			t.Errorf("status %q: NewSession got %v", status, s.Values())
		}
	}
}

func TestReadRefusesANonObject(t *testing.T) {
	for _, raw := range []string{"[]", "null", `"x"`, "{} {}", "{"} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set(SessionHeader, raw)
		r.Header.Set(StatusHeader, "valid")
		if values, _, err := Read(r); err == nil || values == nil {
			t.Errorf("%s: got %v %v", raw, values, err)
		}
	}
}

func TestReadIntoATypedValue(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set(SessionHeader, `{"user":"zo\u00eb","cart":[1,2]}`)
	r.Header.Set(StatusHeader, "valid")
	var v struct {
		User string `json:"user"`
		Cart []int  `json:"cart"`
	}
	if _, err := ReadInto(r, &v); err != nil || v.User != "zoë" || len(v.Cart) != 2 {
		t.Fatalf("got %+v %v", v, err)
	}
}

func TestSessionHeader(t *testing.T) {
	old := map[string]any{"a": json.Number("1"), "prefs": map[string]any{"theme": "dark", "lang": "en"}, "pad": "pppppppppppppppppppppppppppppp"}
	cases := []struct {
		name, header, value string
		change              func(m map[string]any)
	}{
		{"unchanged", "", "", func(m map[string]any) {}},
		{"one key", PatchHeader, `{"a":2}`, func(m map[string]any) { m["a"] = 2 }},
		{"deleted", PatchHeader, `{"a":null}`, func(m map[string]any) { delete(m, "a") }},
		{"nested", PatchHeader, `{"prefs":{"lang":null}}`, func(m map[string]any) { m["prefs"] = map[string]any{"theme": "dark"} }},
		{"nil value", SetHeader, `{"a":null,"pad":"pppppppppppppppppppppppppppppp","prefs":{"lang":"en","theme":"dark"}}`, func(m map[string]any) { m["a"] = nil }},
		{"emptied", SetHeader, `{}`, func(m map[string]any) {
			for k := range m {
				delete(m, k)
			}
		}},
	}
	for _, c := range cases {
		current := map[string]any{}
		for k, v := range old {
			current[k] = v
		}
		c.change(current)
		header, value, err := sessionHeader(old, current)
		if err != nil || header != c.header || value != c.value {
			t.Errorf("%s: got %q %q %v", c.name, header, value, err)
		}
	}
}

func TestHandlerWritesBeforeTheHeadAndLeavesTheAppsHeaderAlone(t *testing.T) {
	handler := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := FromRequest(r)
		s.Set("user", "bob")
		if r.URL.Path == "/own" {
			w.Header().Set(SetHeader, `{"own":1}`)
		}
		_, _ = w.Write([]byte("ok"))
	}))
	for path, want := range map[string]string{"/": `{"user":"bob"}`, "/own": `{"own":1}`} {
		r := httptest.NewRequest("GET", path, nil)
		r.Header.Set(SessionHeader, `{"user":"alice"}`)
		r.Header.Set(StatusHeader, "valid")
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		if got := w.Header().Get(SetHeader) + w.Header().Get(PatchHeader); got != want {
			t.Errorf("%s: got %q, want %q", path, got, want)
		}
	}
}

func TestAValueEncodingJSONCannotWriteIsA500(t *testing.T) {
	handler := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		FromRequest(r).Set("f", func() {})
		_, _ = w.Write([]byte("page"))
	}))
	w := httptest.NewRecorder()
	handler.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusInternalServerError || w.Header().Get(SetHeader) != "" {
		t.Fatalf("got %d %v", w.Code, w.Header())
	}
}
