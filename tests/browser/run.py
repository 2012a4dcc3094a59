#!/usr/bin/env python3
"""End-to-end tests of the web client in headless Chromium.

Each test starts the real chatd binary on 127.0.0.1 (any free port, its
own temp directory for the SQLite file and the uploaded files) and drives
Debian's Chromium through Playwright (the system browser as the
executable: nothing is downloaded). Every test saves screenshots in its
temp directory; the paths are printed.

    python3 tests/browser/run.py [--chatd target/debug/chatd] [test-name ...]

Exit status 0 when every test passed.
"""

import argparse
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import zlib

from playwright.sync_api import sync_playwright, expect

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach
# Google's hosts, which this sandbox refuses.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
API_KEY = "browser-test-key-0123456789"
SECRET = "browser-tests-jwt-secret-0123456789abcdef"
WAIT_MS = 10_000


class Chatd:
    """The real binary with SQLite and local files in `workdir`."""

    def __init__(self, binary, workdir, port=0, extra=()):
        self.binary = binary
        self.workdir = workdir
        self.port = port
        # More `--set key=value` settings.
        self.extra = list(extra)
        self.proc = None
        self.start()

    def start(self):
        args = [
            self.binary, "--host", "127.0.0.1", "--port", str(self.port),
            "--shards", "2",
            "--set", "metrics.enabled=false",
            "--set", "store.backend=sqlite",
            "--set", f"store.sqlite.path={self.workdir}/chatd.db",
            "--set", f"files.path={self.workdir}/files",
            "--set", f"auth.jwt_secret={SECRET}",
            "--set", f"api.keys=[{API_KEY}]",
            "--set", "auth.argon2.memory_kib=1024",
            "--set", "auth.argon2.iterations=1",
        ]
        for setting in self.extra:
            args += ["--set", setting]
        log = open(os.path.join(self.workdir, "chatd.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, cwd=self.workdir)
        line = self.proc.stdout.readline().decode()
        m = re.search(r"listening on [^:]+:(\d+)", line)
        assert m, f"chatd did not start: {line!r}"
        self.port = int(m.group(1))

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def api(self, method, path, body=None, token=None, key=None):
        req = urllib.request.Request(self.url + "/api/chat-api" + path, method=method)
        if body is not None:
            req.data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
            return json.loads(data) if data else None


def png(width, height):
    """A small RGB PNG, made here (no imaging library needed)."""
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter: none
        for x in range(width):
            row += bytes((x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 160))
        rows.append(bytes(row))
    raw = b"".join(rows)

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Browser:
    def __init__(self, pw, workdir):
        self.browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.workdir = workdir
        self.shots = []
        self.errors = []
        # The pages' console lines, printed when a test fails.
        self.console = []

    def page(self, **context_args):
        ctx = self.browser.new_context(**context_args)
        page = ctx.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        return page

    def shot(self, page, name):
        path = os.path.join(self.workdir, f"{name}.png")
        page.screenshot(path=path)
        self.shots.append(path)

    def close(self):
        self.browser.close()


def sign_up(page, server, username, display):
    page.goto(server.url + "/")
    page.click("#auth-toggle")
    page.fill("#auth-username", username)
    page.fill("#auth-display", display)
    page.fill("#auth-password", "password123")
    page.click("#auth-submit")
    expect(page.locator("#conn-state")).to_have_text("online")
    return page.evaluate("localStorage.getItem('chatd.token')")


def say(page, text):
    page.fill("#composer-text", text)
    page.press("#composer-text", "Enter")


def message(page, text):
    """The messages whose whole text is `text`."""
    return page.locator(".msg .body", has_text=re.compile("^" + re.escape(text) + "$"))


def open_dm_with(page, display):
    page.locator("#list-users .user", has_text=display).click()
    expect(page.locator("#room-title")).to_have_text(display)


def two_users(server, b, first, second):
    """Two pages, each a new user signed up ((username, display name) each);
    the first reloaded so that it lists the second."""
    one, two = b.page(), b.page()
    sign_up(one, server, *first)
    sign_up(two, server, *second)
    one.reload()
    expect(one.locator("#conn-state")).to_have_text("online")
    return one, two


# ------------------------------------------------------------------ tests

def test_dm_both_ways_and_script_as_text(server, b):
    alice, bob = two_users(server, b, ("alice", "Alice"), ("bob", "Bob"))
    open_dm_with(alice, "Bob")
    say(alice, "hi Bob")
    expect(alice.locator(".msg.mine .state.acked")).to_have_count(1)
    # Bob is told of the new DM and sees it in his sidebar, with an unread count.
    dm = bob.locator("#list-dms .conv", has_text="Alice")
    expect(dm.locator(".unread")).to_have_text("1")
    dm.click()
    expect(message(bob, "hi Bob")).to_have_count(1)
    say(bob, "hello Alice")
    expect(message(alice, "hello Alice")).to_have_count(1)
    # Online dots: both are online.
    expect(alice.locator("#list-dms .conv .dot.on")).to_have_count(1)
    evil = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
    say(alice, evil)
    expect(message(bob, evil)).to_have_count(1)
    assert bob.evaluate("window.__xss") is None, "a message ran as code"
    assert bob.locator(".msg .body img").count() == 0
    # Typing indicator.
    bob.fill("#composer-text", "")
    bob.type("#composer-text", "typ")
    expect(alice.locator("#typing")).to_have_text("Bob is typing…")
    b.shot(alice, "dm-alice")
    b.shot(bob, "dm-bob")


def test_own_page_works_whatever_default_protocol(server, b):
    """`server.default_protocol` governs a bare `/ws` only: chatd's own page
    (which connects to its native endpoint) signs up, chats and is acked
    with each value."""
    for wire in ("chat-api", "fastchat", "redis-chat-demo"):
        workdir = tempfile.mkdtemp(prefix=f"chatd-default-{wire}-")
        other = Chatd(server.binary, workdir, extra=[f"server.default_protocol={wire}"])
        try:
            page = b.page()
            sign_up(page, other, f"user-{wire.replace('-', '')}"[:20], f"User {wire}")
            page.locator("#list-public .conv", has_text="general").first.click()
            say(page, f"hello over {wire}")
            expect(page.locator(".msg.mine .state.acked")).to_have_count(1)
            expect(message(page, f"hello over {wire}")).to_have_count(1)
            page.context.close()
        finally:
            other.stop()


def test_group_history_scroll_back(server, b):
    owner, member = two_users(server, b, ("owner", "Owner"), ("member", "Member"))
    owner.click("#btn-new-group")
    owner.fill("#group-name", "team")
    owner.press("#group-name", "Enter")
    expect(owner.locator("#room-title")).to_have_text("team")
    room = owner.locator("#list-groups .conv.active").get_attribute("data-room")
    # 75 messages, through the server publish API (faster than typing),
    # before the member is added: the member has only the history.
    for i in range(1, 76):
        server.api("POST", "/server/publish", {"room": room, "type": "chat", "data": {"content": f"history line {i}"}}, key=API_KEY)
    owner.select_option("#member-select", label="Member")
    owner.click("#member-form button")
    # A group we are told of live replays everything sent before our join
    # (the web client joins it with since_seq 0); on a fresh page it is
    # paged from the newest, which is what this test scrolls through.
    expect(member.locator("#list-groups .conv", has_text="team")).to_have_count(1)
    member.reload()
    expect(member.locator("#conn-state")).to_have_text("online")
    member.locator("#list-groups .conv", has_text="team").click()
    expect(message(member, "history line 75")).to_have_count(1)
    expect(message(member, "history line 1")).to_have_count(0)
    # Scroll to the top until the first line is there.
    for _ in range(10):
        if message(member, "history line 1").count():
            break
        member.locator("#messages").evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
        member.wait_for_timeout(300)
    expect(message(member, "history line 1")).to_have_count(1)
    bodies = member.locator(".msg .body").all_text_contents()
    lines = [t for t in bodies if t.startswith("history line ")]
    assert lines == [f"history line {i}" for i in range(1, 76)], lines[:5]
    b.shot(member, "group-scrolled-back")


def test_image_upload_shows_preview_on_the_other_side(server, b):
    alice, bob = two_users(server, b, ("alice", "Alice"), ("bob", "Bob"))
    open_dm_with(alice, "Bob")
    alice.set_input_files("#file-input", files=[{"name": "gradient.png", "mimeType": "image/png", "buffer": png(640, 360)}])
    expect(alice.locator("#pending-files .chip")).to_have_text("gradient.png")
    alice.set_input_files("#file-input", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"some notes\n"}])
    expect(alice.locator("#pending-files .chip")).to_have_count(2)
    expect(alice.locator("#pending-files .chip").nth(1)).to_have_text("notes.txt")
    say(alice, "a picture")
    # A pasted image (a 500x250 canvas, as a clipboard file).
    alice.evaluate("""async () => {
        const c = document.createElement('canvas');
        c.width = 500; c.height = 250;
        const g = c.getContext('2d');
        g.fillStyle = '#c0392b'; g.fillRect(0, 0, 500, 250);
        g.fillStyle = '#fff'; g.font = '60px sans-serif'; g.fillText('pasted', 140, 150);
        const blob = await new Promise((r) => c.toBlob(r, 'image/png'));
        const data = new DataTransfer();
        data.items.add(new File([blob], 'pasted.png', { type: 'image/png' }));
        const ev = new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true });
        document.getElementById('composer-text').dispatchEvent(ev);
    }""")
    expect(alice.locator("#pending-files .chip")).to_have_text("pasted.png")
    say(alice, "pasted")
    bob.locator("#list-dms .conv", has_text="Alice").click()
    img = bob.locator(".msg img.att-img")
    expect(img).to_have_count(2)
    bob.wait_for_function("""() => [...document.querySelectorAll('.msg img.att-img')]
        .every((i) => i.complete && i.naturalWidth > 0)""")
    widths = img.evaluate_all("list => list.map((i) => [i.naturalWidth, i.naturalHeight])")
    assert widths == [[320, 180], [320, 160]], f"the previews are the 320 px thumbnails, got {widths}"
    expect(bob.locator(".msg a.att-file")).to_have_text(re.compile(r"notes\.txt \(11 B\)"))
    b.shot(bob, "image-preview")


def test_kill_and_restart_under_an_open_page_recovers_exactly_once(server, b):
    alice = b.page()
    # Records what the page sends, to check what a retry sends.
    alice.add_init_script("""
        window.__sent = [];
        const send = WebSocket.prototype.send;
        WebSocket.prototype.send = function (data) { window.__sent.push(data); return send.call(this, data); };
    """)
    sign_up(alice, server, "alice", "Alice")
    expect(alice.locator("#room-title")).to_have_text("# general")
    for i in range(3):
        say(alice, f"before {i}")
    expect(alice.locator(".msg.mine .state.acked")).to_have_count(3)
    # A chat's echo can come before its ack: wait until nothing is pending.
    expect(alice.locator(".msg.mine .state.sending")).to_have_count(0)
    # Sent to a frozen server that then dies: no ack, so the page cannot
    # know whether it arrived; it shows it failed, with a retry button.
    server.freeze()
    say(alice, "retried")
    expect(alice.locator(".msg.mine .state")).to_have_count(4)
    expect(alice.locator(".msg.mine .state.sending")).to_have_count(1)
    server.kill()
    expect(alice.locator("#conn-state")).to_have_text("reconnecting")
    expect(alice.locator(".msg.mine .state.failed")).to_have_count(1)
    server.start()  # same port, same database
    # Sent while the page is still disconnected (its backoff is running).
    assert alice.locator("#conn-state").text_content() == "reconnecting"
    for i in range(5):
        server.api("POST", "/server/publish", {"room": "general", "type": "chat", "data": {"content": f"meanwhile {i}"}}, key=API_KEY)
    expect(alice.locator("#conn-state")).to_have_text("online", timeout=30_000)
    for i in range(5):
        expect(message(alice, f"meanwhile {i}")).to_have_count(1)
    alice.click(".msg.mine .retry")
    expect(alice.locator(".msg.mine .state.failed")).to_have_count(0)
    expect(message(alice, "retried")).to_have_count(1)
    # The retry carried the id of the first attempt.
    sent = [json.loads(f) for f in alice.evaluate("window.__sent")]
    ids = [m.get("client_msg_id") for m in sent if m.get("type") == "chat" and m["data"]["content"] == "retried"]
    assert len(ids) == 2 and ids[0] == ids[1] and ids[0], ids
    say(alice, "after")
    expect(message(alice, "after")).to_have_count(1)
    alice.wait_for_timeout(500)
    bodies = alice.locator(".msg .body").all_text_contents()
    expected = [f"before {i}" for i in range(3)] + [f"meanwhile {i}" for i in range(5)] + ["retried", "after"]
    assert bodies == expected, bodies
    b.shot(alice, "after-restart")


def test_phone_layout(server, b):
    page = b.page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_up(page, server, "phone", "Phone")
    # In a room the conversation list gives way to the messages.
    expect(page.locator("#sidebar")).to_be_hidden()
    say(page, "from a phone")
    expect(page.locator(".msg.mine .state.acked")).to_have_count(1)
    b.shot(page, "phone-room")
    page.click("#btn-back")
    expect(page.locator("#sidebar")).to_be_visible()
    b.shot(page, "phone-sidebar")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways ({width}px)"


def test_log_out_and_back_in(server, b):
    page = b.page()
    sign_up(page, server, "dora", "Dora")
    say(page, "remember me")
    expect(page.locator(".msg.mine .state.acked")).to_have_count(1)
    page.click("#btn-logout")
    expect(page.locator("#auth")).to_be_visible()
    assert page.evaluate("localStorage.getItem('chatd.token')") is None
    page.fill("#auth-username", "dora")
    page.fill("#auth-password", "wrong-password")
    page.click("#auth-submit")
    expect(page.locator("#auth-error")).to_have_text("wrong username or password")
    page.fill("#auth-password", "password123")
    page.click("#auth-submit")
    expect(message(page, "remember me")).to_have_count(1)
    b.shot(page, "logged-in-again")


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chatd", default="target/debug/chatd")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    binary = os.path.abspath(args.chatd)
    # Playwright's 5 s default is short for a CI machine busy elsewhere.
    expect.set_options(timeout=WAIT_MS)
    failed = []
    with sync_playwright() as pw:
        for test in TESTS:
            if args.names and not any(n in test.__name__ for n in args.names):
                continue
            workdir = tempfile.mkdtemp(prefix=f"chatd-{test.__name__}-")
            server = Chatd(binary, workdir)
            b = Browser(pw, workdir)
            started = time.time()
            try:
                test(server, b)
                assert not b.errors, f"errors in the page: {b.errors}"
                print(f"ok   {test.__name__} ({time.time() - started:.1f}s)")
            except Exception:
                failed.append(test.__name__)
                print(f"FAIL {test.__name__}\n{traceback.format_exc()}")
                for p in b.browser.contexts:
                    for page in p.pages:
                        try:
                            # What the page showed, for a failure on a
                            # machine whose screenshots are gone.
                            shown = page.evaluate("""() => ({
                                conn: document.getElementById('conn-state')?.textContent,
                                messages: [...document.querySelectorAll('#messages .msg')]
                                    .map((m) => m.innerText.replace(/\\s+/g, ' ')),
                            })""")
                            print(f"     page {page.url}: {json.dumps(shown)}")
                            if b.console:
                                print("     console: " + " | ".join(b.console[-20:]))
                            b.shot(page, f"failure-{len(b.shots)}")
                        except Exception:
                            pass
            finally:
                b.close()
                server.stop()
            for s in b.shots:
                print(f"     screenshot {s}")
    if failed:
        print(f"{len(failed)} failed: {', '.join(failed)}")
        sys.exit(1)
    print("all browser tests passed")


if __name__ == "__main__":
    main()
