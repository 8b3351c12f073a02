"""
The web page (web/) driven in headless Chromium: for its tests, its timing and its screenshot.

    python browser.py noisy.wav -o page_denoised.wav          # a file through the page, as a user's browser runs it
    python browser.py noisy.wav --screenshot web/screenshot.png  # the page in use, as the README shows it

It serves the repository on 127.0.0.1 (a static server, as `python -m http.server` would), opens
/web/ in Debian's Chromium through chromedriver (Selenium), and calls the page's
window.denoise(blob, floorDb), which returns the WAV the page offers for download. Needs
`apt install chromium chromium-driver`, `pip install selenium` and `bash web/build.sh`.
"""
import base64
import functools
import http.server
import json
import shutil
import threading
import time
from pathlib import Path

from audio import UserError, arg_parser, run_main

ROOT = Path(__file__).resolve().parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1100,1250")


def missing():
    """What is missing to drive the page (empty if nothing)."""
    found = []
    for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (Path(path).exists() or shutil.which(name)):
            found.append(f"{name} (apt install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        found.append("selenium (pip install selenium)")
    if not (ROOT / "web" / "node_modules" / "onnxruntime-web").is_dir():
        found.append("onnxruntime-web (bash web/build.sh)")
    return found


class Server:
    """The repository served on 127.0.0.1 at a free port, in a thread; every path requested is kept."""

    def __init__(self, root=ROOT):
        self.requests = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                outer.requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Page:
    """/web/ open in headless Chromium, with every network request the browser makes logged."""

    def __init__(self, server, query=""):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        for flag in FLAGS:
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        driver = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
        self.driver = webdriver.Chrome(service=Service(driver), options=opts)
        self.driver.set_script_timeout(600)
        self.urls = []
        self.driver.get(f"{server.url}/web/{query}")
        self.state = self.wait_until_ready()

    def wait_until_ready(self, timeout=60):
        """'true' once the model has loaded, 'failed' if it could not."""
        end = time.time() + timeout
        while time.time() < end:
            state = self.driver.execute_script("return document.body.dataset.ready || null")
            if state:
                return state
            time.sleep(0.1)
        raise TimeoutError("the page did not load its model")

    def text(self, element_id):
        return self.driver.find_element("id", element_id).text

    def denoise(self, data, floor_db=None):
        """The page's window.denoise on the bytes of an audio file: the WAV bytes it offers for download, or a
        UserError with the page's message."""
        result = self.driver.execute_async_script("""
            const [b64, floorDb, done] = arguments;
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            window.denoise(new Blob([bytes]), floorDb).then(async (blob) => {
              const a = new Uint8Array(await blob.arrayBuffer());
              let s = "";
              for (let i = 0; i < a.length; i += 32768) s += String.fromCharCode(...a.subarray(i, i + 32768));
              done({wav: btoa(s)});
            }).catch((e) => done({error: String(e && e.message || e)}));
        """, base64.b64encode(data).decode(), floor_db)
        if "error" in result:
            raise UserError(result["error"])
        return base64.b64decode(result["wav"])

    def requested_urls(self):
        """Every URL the browser has asked for so far (from Chromium's network log)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.urls.append(message["params"]["request"]["url"])
        return list(self.urls)

    def close(self):
        self.driver.quit()


def main(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("input", type=Path, help="an audio file")
    p.add_argument("-o", "--output", type=Path, help="where to write the page's denoised WAV")
    p.add_argument("--floor-db", type=float, help="the floor (default: the model's)")
    p.add_argument("--screenshot", type=Path, help="open the file in the page as a user would and save a PNG of it")
    args = p.parse_args(argv)
    if not args.input.is_file():
        raise UserError(f"no such file: {args.input}")
    if missing():
        raise UserError("driving the page needs " + ", ".join(missing()))
    server = Server()
    page = Page(server)
    try:
        if page.state != "true":
            raise UserError(f"the page could not load its model: {page.text('error')}")
        if args.output:
            t = time.perf_counter()
            args.output.write_bytes(page.denoise(args.input.read_bytes(), args.floor_db))
            print(f"wrote {args.output} ({time.perf_counter() - t:.1f} s in the page)")
        if args.screenshot:
            page.driver.find_element("id", "file").send_keys(str(args.input.resolve()))
            end = time.time() + 600
            while not page.text("status").startswith("Done") and not page.text("error") and time.time() < end:
                time.sleep(0.2)
            if page.text("error"):
                raise UserError(f"the page says: {page.text('error')}")
            page.driver.save_screenshot(str(args.screenshot))
            print(f"wrote {args.screenshot}")
    finally:
        page.close()
        server.close()


if __name__ == "__main__":
    run_main(main)
