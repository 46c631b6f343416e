package console_test

import (
	"regexp"
	"testing"

	"github.com/campusedge/campusedge/edge/console"
)

// Every catalogue has every key of the English one, and the same {vars}:
// a missing key would show English on a Chinese page, a missing var a
// literal "{name}".
func TestCataloguesAreComplete(t *testing.T) {
	langs, err := console.Languages()
	if err != nil {
		t.Fatal(err)
	}
	en, err := console.Catalogue("en")
	if err != nil {
		t.Fatal(err)
	}
	vars := regexp.MustCompile(`\{\w+\}`)
	for tag, name := range langs {
		if name == "" {
			t.Errorf("%s: no language.name", tag)
		}
		cat, err := console.Catalogue(tag)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range en {
			tv, ok := cat[k]
			if !ok {
				t.Errorf("%s: missing %s", tag, k)
				continue
			}
			want := map[string]bool{}
			for _, m := range vars.FindAllString(v, -1) {
				want[m] = true
			}
			for _, m := range vars.FindAllString(tv, -1) {
				if !want[m] {
					t.Errorf("%s: %s uses %s, which the English text does not have", tag, k, m)
				}
				delete(want, m)
			}
			for m := range want {
				if k != "err.firmware_disabled" && m != "{message}" {
					t.Errorf("%s: %s drops %s", tag, k, m)
				}
			}
		}
		for k := range cat {
			if _, ok := en[k]; !ok {
				t.Errorf("%s: %s is not in en.json", tag, k)
			}
		}
	}
}

func TestLanguageFromEnv(t *testing.T) {
	for env, want := range map[string]string{"zh_CN.UTF-8": "zh-CN", "zh_TW.UTF-8": "zh-CN", "en_US.UTF-8": "en", "C": "en", "": "en"} {
		got := console.LanguageFromEnv(func(k string) string {
			if k == "LANG" {
				return env
			}
			return ""
		})
		if got != want {
			t.Errorf("LANG=%s: %s, want %s", env, got, want)
		}
	}
}
