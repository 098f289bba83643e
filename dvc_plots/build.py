"""Rebuild offline.html from the npm packages pinned in package.json (`npm ci` first).

DVC's default HTML page loads vega from cdn.jsdelivr.net; this template inlines the same libraries
and leaves out DVC's `{scripts}` placeholder, so the CDN tags are never inserted.
Usage: cd dvc_plots && npm ci && python build.py
"""

from pathlib import Path

HERE = Path(__file__).parent
LIBS = ["vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js"]


def main() -> None:
    scripts = []
    for lib in LIBS:
        js = (HERE / "node_modules" / lib).read_text(encoding="utf-8")
        assert "</script" not in js and "{plot_divs}" not in js, lib
        scripts.append(f"<script>/* {lib} */\n{js}\n</script>")
    page = (
        "<!DOCTYPE html>\n<html>\n<head>\n{refresh_tag}\n<meta charset=\"utf-8\">\n<title>lab: DVC plots</title>\n"
        + "\n".join(scripts)
        + "\n<style>table { border-spacing: 15px; } body { font-family: sans-serif; }</style>\n</head>\n"
        "<body>\n{plot_divs}\n</body>\n</html>\n"
    )
    (HERE / "offline.html").write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main()
