package recorder

import (
	"testing"
	"time"
)

func TestTitleInTheSchoolsLanguage(t *testing.T) {
	sh, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 1, 30, 0, 0, time.UTC).In(sh) // 09:30 in Karamay's official zone
	if got := Title("数学", at, 1, "zh-CN"); got != "数学 — 2026年12月2日 09:30" {
		t.Errorf("zh-CN: %q", got)
	}
	if got := Title("数学", at, 2, "zh-CN"); got != "数学 — 2026年12月2日 09:30（第2部分）" {
		t.Errorf("zh-CN part 2: %q", got)
	}
	if got := Title("Maths", at, 2, "en"); got != "Maths — 2 Dec 2026 09:30 (part 2)" {
		t.Errorf("en: %q", got)
	}
}
