"""The browser client in a real browser: two people, two nodes, two pages.

Alice runs ``kith web`` with her node in the same process; Bob runs ``kith run`` and
``kith web`` attached to it (so his node can be restarted under his page). Both pages
are headless Chromium from Debian's packages (``/usr/bin/chromium``, installed by
``./scripts/test``), driven with Playwright's sync API; Playwright never downloads a
browser. The pages are found the way a screen reader finds them: the "Groups"
navigation, the "Message" textbox, buttons by their labels.

Every wait is Playwright's ``expect`` (or ``wait_for``) with a timeout, or a wait for a
process's output line under a deadline; nothing sleeps. Each page records every
JavaScript dialog (``alert`` and the like), every uncaught error and every
Content-Security-Policy violation: a test fails if any happened, which is how
``<img onerror>`` and ``<script>`` messages are shown not to run. With
``KITH_SCREENSHOT=1`` the conversation test saves docs/web.png.

The nodes share one module-scoped set-up (starting them costs seconds); each test
makes its own group, so they do not depend on each other's order.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.sync_api import FilePayload, Page, expect, sync_playwright
    HAVE_PLAYWRIGHT = True
except ImportError:  # outside CI a machine without Playwright skips (below)
    HAVE_PLAYWRIGHT = False

CHROMIUM = "/usr/bin/chromium"
IN_CI = os.environ.get("CI") == "true"
MISSING = ("playwright is not installed (pip install -e '.[dev]')" if not HAVE_PLAYWRIGHT
           else f"Chromium is not at {CHROMIUM} (apt-get install chromium)"
           if not Path(CHROMIUM).exists() else "")
if MISSING and IN_CI:  # in CI these tests run, never skip
    raise RuntimeError(f"the browser tests cannot run: {MISSING}")

pytestmark = [pytest.mark.system, pytest.mark.skipif(bool(MISSING), reason=MISSING)]

ROOT = Path(__file__).resolve().parents[2]
LISTENING = r"listening on (?P<address>127\.0\.0\.1:\d+)"
URL = r"^(?P<url>http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{43})$"
#: Seconds for a process to print what a test waits for.
PROCESS_TIMEOUT = 20.0
#: Milliseconds for something to show on a page (two nodes and a browser on 2 shared CPUs).
PAGE_TIMEOUT = 20_000
#: Milliseconds within which a message ends its author's typing mark (a notice lasts 6 s).
TYPING_GONE = 3_000
XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "<script>alert(1)</script>"


class Process:
    """A ``kith`` process; threads read its output lines, waited on with a deadline."""

    def __init__(self, data: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "KITH_DATA"}
        env["PYTHONUNBUFFERED"] = "1"
        self.argv = [sys.executable, "-m", "node", "--data", str(data), *args]
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        for stream in (self.popen.stdout, self.popen.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first line (old or new) matching ``pattern``; fails after PROCESS_TIMEOUT s."""
        regex = re.compile(pattern)
        for line in self.lines:
            if match := regex.search(line):
                return match
        closed = 0
        while closed < 2:
            try:
                new = self._new.get(timeout=PROCESS_TIMEOUT)
            except queue.Empty:
                break
            if new is None:
                closed += 1
                continue
            self.lines.append(new)
            if match := regex.search(new):
                return match
        raise AssertionError(f"{' '.join(self.argv)} printed no line matching {pattern!r}; "
                             f"it printed:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Person:
    """One side: a data directory, its processes, and a page with what it recorded."""

    name: str
    data: Path
    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check_clean(self) -> None:
        assert not self.dialogs, f"{self.name}'s page opened dialogs: {self.dialogs}"
        assert not self.errors, f"{self.name}'s page had errors: {self.errors}"


@dataclass
class Pair:
    alice: Person
    bob: Person
    alice_address: str
    bob_listen: str
    bob_node: Process
    procs: list[Process]


def open_page(browser: Any, name: str, data: Path, url: str) -> Person:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    person = Person(name, data, page)

    def on_dialog(dialog: Any) -> None:
        person.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(msg: Any) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            person.errors.append(msg.text)  # an inline script or style the page must not have

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda e: person.errors.append(str(e)))
    page.goto(url)
    expect(page.get_by_role("navigation", name="Groups")).to_be_visible()
    expect(page.locator("#me")).to_contain_text(name)
    return person


def start_bob_node(data: Path, listen: str, alice: str) -> Process:
    node = Process(data, "run", "--listen", listen, "--no-mdns", "--name", "bob", "--peer", alice)
    node.wait_for(LISTENING)
    return node


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    expect.set_options(timeout=PAGE_TIMEOUT)
    procs: list[Process] = []
    with tempfile.TemporaryDirectory(prefix="kith-web-") as tmp, sync_playwright() as pw:
        try:
            alice_data, bob_data = Path(tmp, "alice"), Path(tmp, "bob")
            alice = Process(alice_data, "web", "--no-open", "--web-listen", "127.0.0.1:0",
                            "--listen", "127.0.0.1:0", "--no-mdns", "--name", "alice")
            procs.append(alice)
            alice_address = alice.wait_for(LISTENING)["address"]
            alice_url = alice.wait_for(URL)["url"]
            bob_node = start_bob_node(bob_data, "127.0.0.1:0", alice_address)
            procs.append(bob_node)
            bob_listen = bob_node.wait_for(LISTENING)["address"]
            bob_web = Process(bob_data, "web", "--no-open", "--web-listen", "127.0.0.1:0")
            procs.append(bob_web)
            bob_url = bob_web.wait_for(URL)["url"]
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            pair = Pair(open_page(browser, "alice", alice_data, alice_url),
                        open_page(browser, "bob", bob_data, bob_url),
                        alice_address, bob_listen, bob_node, procs)
            yield pair
            browser.close()
        finally:
            for proc in reversed(procs):
                proc.stop()


# -- what a person does on the page ------------------------------------------------------


def group_button(page: Page, name: str) -> Any:
    return page.get_by_role("navigation", name="Groups").get_by_role("button", name=name)


def create_group(page: Page, name: str, policy: str = "") -> None:
    """A private group, or with ``policy`` an open one."""
    page.get_by_role("button", name="New group").click()
    page.get_by_label("Name").fill(name)
    if policy:
        page.get_by_label("Kind").select_option("open")
        page.get_by_label("Who may join").select_option(policy)
    page.get_by_role("button", name="Create").click()
    expect(group_button(page, name)).to_have_attribute("aria-current", "page")


def add_member(page: Page, name: str) -> None:
    select = page.get_by_label("Peer to add")
    expect(select.locator("option", has_text=name)).to_have_count(1)
    select.select_option(label=name)
    page.get_by_role("button", name="Add", exact=True).click()
    members = page.get_by_role("complementary", name="Members")
    expect(members.get_by_role("button", name=re.compile(name))).to_be_visible()


def open_group(page: Page, name: str) -> None:
    group_button(page, name).click()
    expect(page.locator("#group-title")).to_have_text(name)


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def message(page: Page, text: str) -> Any:
    """The message whose own text (not a quote of it) or file name contains ``text``."""
    return page.locator("article.msg").filter(
        has=page.locator(":scope > .text, :scope > .file .file-name", has_text=text))


def both_in_a_group(pair: Pair, name: str) -> tuple[Page, Page]:
    a, b = pair.alice.page, pair.bob.page
    create_group(a, name)
    add_member(a, "bob")
    expect(group_button(b, name)).to_be_visible()
    open_group(b, name)
    return a, b


def take_screenshot(a: Page, b: Page) -> None:
    """docs/web.png: Alice's page with a file, a reaction and an unread group."""
    b.locator("#file-input").set_input_files(files=[FilePayload(
        name="agenda.pdf", mimeType="application/pdf", buffer=b"%PDF-1.4 agenda" * 700)])
    expect(message(a, "agenda.pdf").get_by_role("link", name="Save file")).to_be_visible()
    message(a, "which folder?").get_by_role("button", name="React", exact=True).click()
    message(a, "which folder?").get_by_role("button", name="React with 👍").click()
    create_group(b, "workshop")
    add_member(b, "alice")
    send(b, "@alice can you bring the projector?")
    expect(group_button(a, "workshop").locator(".badge")).to_have_text("1")
    expect(a).to_have_title(re.compile(r"^\(\d+\) Kith$"))
    open_group(b, "lab")
    a.get_by_role("textbox", name="Message").fill("talks/2026/december, next to the")
    expect(message(a, "which folder?").locator(".chip")).to_have_text("👍 1")
    a.mouse.move(0, 0)  # no hover highlight in the picture
    a.screenshot(path=str(ROOT / "docs" / "web.png"))
    a.get_by_role("textbox", name="Message").fill("")


# -- the tests ------------------------------------------------------------------------------


def test_a_conversation_between_two_pages(pair: Pair) -> None:
    a, b = both_in_a_group(pair, "lab")
    box = a.get_by_role("textbox", name="Message")
    box.fill("hello @b")
    box.press("Tab")  # completes a member's name
    expect(box).to_have_value("hello @bob ")
    box.press_sequentially("the slides are on the shared drive")
    box.press("Enter")
    expect(box).to_have_value("")
    expect(message(b, "the slides are on the shared drive")).to_be_visible()
    expect(message(b, "the slides").locator(".mention")).to_have_text("@bob")
    # Screen readers hear the new message once (the log itself is redrawn, not live).
    expect(b.locator("#announce")).to_have_text("alice: hello @bob the slides are on the "
                                                "shared drive")
    b.get_by_role("textbox", name="Message").press_sequentially("thanks, lo")
    expect(a.locator("#typing")).to_have_text("bob is typing…")
    send(b, "thanks, looking now")
    expect(message(a, "thanks, looking now")).to_be_visible()
    expect(a.locator("#typing")).to_have_text("", timeout=TYPING_GONE)  # before the 6 s
    # Delivery and read marks: Bob's page has the conversation open, so he read it.
    expect(message(a, "the slides").locator(".delivery")).to_contain_text("read by bob")

    # A reply, quoted above it on both pages.
    message(b, "the slides").get_by_role("button", name="Reply").click()
    send(b, "which folder?")
    quote = message(a, "which folder?").locator(".quote")
    expect(quote).to_contain_text("alice: hello @bob the slides")

    # A reaction, then an edit, a pin and a delete of Alice's.
    message(b, "the slides").get_by_role("button", name="React", exact=True).click()
    message(b, "the slides").get_by_role("button", name="React with 🎉").click()
    expect(message(a, "the slides").locator(".chip")).to_have_text("🎉 1")
    send(a, "it is in talks/2026")
    message(a, "it is in talks/2026").get_by_role("button", name="Edit").click()
    send(a, "it is in talks/2026/december")
    expect(message(b, "talks/2026/december")).to_contain_text("(edited)")
    message(a, "talks/2026/december").get_by_role("button", name="Pin").click()
    expect(message(b, "talks/2026/december")).to_contain_text("pinned")
    expect(b.get_by_role("list", name="Pinned messages")).to_contain_text("talks/2026/december")

    # Members: presence and the fingerprint, verified, then marked beside the name.
    members = a.get_by_role("complementary", name="Members")
    members.get_by_role("button", name=re.compile("bob")).click()
    dialog = a.get_by_role("dialog", name="bob")
    expect(dialog.locator(".fingerprint")).to_have_text(re.compile(r"^(\d{5} ){5}\d{5}$"))
    dialog.get_by_label(re.compile("verified")).check()
    dialog.get_by_role("button", name="Close").click()
    expect(a.locator("#member-list .verified-mark")).to_have_count(1)
    expect(message(a, "which folder?").locator(".verified-mark")).to_have_count(1)

    if os.environ.get("KITH_SCREENSHOT") == "1":
        take_screenshot(a, b)

    send(b, "oops, wrong group")
    message(b, "oops, wrong group").get_by_role("button", name="Delete").click()
    b.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(message(a, "message deleted by bob")).to_be_visible()
    expect(a.locator("article.msg", has_text="oops, wrong group")).to_have_count(0)

    # Search in the conversation, on the page.
    a.get_by_label("Search in this conversation").fill("folder")
    expect(a.locator("article.msg:visible")).to_have_count(1)
    a.get_by_label("Search in this conversation").fill("")
    pair.alice.check_clean()
    pair.bob.check_clean()


def test_a_file_up_with_progress_and_down(pair: Pair) -> None:
    a, b = both_in_a_group(pair, "files")
    data = os.urandom(300_000)
    a.get_by_role("textbox", name="Message").fill("the draft, for review")  # its caption
    a.locator("#file-input").set_input_files(files=[FilePayload(
        name="report draft.bin", mimeType="application/octet-stream", buffer=data)])
    progress = a.get_by_role("progressbar", name="Upload progress")
    expect(progress).to_be_visible()
    expect(progress).to_have_js_property("value", 100)
    expect(a.locator("#upload-label")).to_have_text("Sent report draft.bin")
    received = message(b, "report draft.bin")
    expect(received.locator(".text")).to_have_text("the draft, for review")
    expect(a.get_by_role("textbox", name="Message")).to_have_value("")
    expect(received.get_by_role("link", name="Save file")).to_be_visible()
    with b.expect_download() as download:
        received.get_by_role("link", name="Save file").click()
    assert download.value.suggested_filename == "report draft.bin"
    assert Path(download.value.path()).read_bytes() == data
    pair.alice.check_clean()
    pair.bob.check_clean()


def test_markup_in_messages_is_shown_as_text(pair: Pair) -> None:
    a, b = both_in_a_group(pair, "markup")
    box = a.get_by_role("textbox", name="Message")
    for text in (XSS_IMG, XSS_SCRIPT):  # typed one after the other, without waiting
        box.fill(text)
        box.press("Enter")
    for page in (a, b):
        expect(page.locator("article.msg .text").filter(has_text=XSS_IMG)).to_have_count(1)
        expect(page.locator("article.msg .text").filter(has_text=XSS_SCRIPT)).to_have_count(1)
        assert page.locator("#log img, #log script").count() == 0
    pair.alice.check_clean()
    pair.bob.check_clean()


def test_the_page_follows_the_node_through_a_restart(pair: Pair) -> None:
    a, b = both_in_a_group(pair, "restart")
    send(a, "before the restart")
    expect(message(b, "before the restart")).to_be_visible()
    banner = b.locator("#banner")
    pair.bob_node.stop()
    expect(banner).to_contain_text("not running")
    send(a, "while you were away")
    pair.bob_node = start_bob_node(pair.bob.data, pair.bob_listen, pair.alice_address)
    pair.procs.append(pair.bob_node)
    expect(banner).to_be_hidden()
    # The state came back: the message sent while Bob's node was down is on his page.
    expect(message(b, "while you were away")).to_be_visible()
    send(b, "back again")
    expect(message(a, "back again")).to_be_visible()
    pair.alice.check_clean()
    pair.bob.check_clean()


NOTIFICATION_STUB = """() => {
  window.notes = [];
  window.Notification = class {
    constructor(title, options) { window.notes.push(`${title}: ${options.body}`); }
    addEventListener() {}
  };
  window.Notification.permission = "granted";
}"""


def test_notifications_for_mentions_and_unmuted_groups(pair: Pair) -> None:
    a, b = both_in_a_group(pair, "news")
    b.evaluate(NOTIFICATION_STUB)  # the browser's own would need a desktop to show on
    b.get_by_role("button", name="Mute group").click()
    expect(b.get_by_role("button", name="Unmute group")).to_have_attribute("aria-pressed", "true")
    both_in_a_group(pair, "chatter")  # Bob now looks at another group
    open_group(a, "news")
    send(a, "a message in a muted group")
    send(a, "@bob this one mentions you")
    open_group(a, "chatter")
    send(a, "hello in chatter")  # the group Bob is looking at: no notification
    expect(message(b, "hello in chatter")).to_be_visible()
    open_group(a, "news")
    send(a, "@bob and once more")
    expect(message(a, "and once more")).to_be_visible()
    expect(group_button(b, "news").locator(".badge")).to_have_text("3")
    expect(b).to_have_title(re.compile(r"^\(\d+\) Kith$"))  # unread in the tab's title
    b.wait_for_function("window.notes.length >= 2")
    assert b.evaluate("window.notes") == [
        "alice mentioned you in news: @bob this one mentions you",
        "alice mentioned you in news: @bob and once more"]
    pair.bob.check_clean()


def test_a_phone_sized_window_shows_one_pane_at_a_time(pair: Pair) -> None:
    a, _ = both_in_a_group(pair, "phone")
    a.set_viewport_size({"width": 390, "height": 800})
    try:
        nav = a.get_by_role("navigation", name="Groups")
        members = a.get_by_role("complementary", name="Members")
        box = a.get_by_role("textbox", name="Message")
        expect(box).to_be_visible()
        expect(nav).to_be_hidden()
        expect(members).to_be_hidden()
        a.get_by_role("button", name="Show groups").click()
        expect(nav).to_be_visible()
        expect(box).to_be_hidden()
        open_group(a, "phone")
        expect(box).to_be_visible()
        a.get_by_role("button", name="Members", exact=True).click()
        expect(members.get_by_role("button", name=re.compile("bob"))).to_be_visible()
        a.get_by_role("button", name="Back to the conversation").click()
        expect(box).to_be_visible()
        send(a, "sent from a phone-sized window")
        expect(message(a, "phone-sized")).to_be_visible()
    finally:
        a.set_viewport_size({"width": 1280, "height": 800})
    pair.alice.check_clean()


def member_dialog(page: Page, name: str) -> Any:
    page.get_by_role("complementary", name="Members").get_by_role(
        "button", name=re.compile(name)).click()
    return page.get_by_role("dialog", name=name)


def test_an_owner_changes_a_role_mutes_and_removes_a_member(pair: Pair) -> None:
    a, b = both_in_a_group(pair, "roles")
    bob_row = a.locator("#member-list li", has_text="bob")
    dialog = member_dialog(a, "bob")
    dialog.get_by_label("Role").select_option("admin")
    dialog.get_by_role("button", name="Change role").click()
    expect(bob_row).to_contain_text("admin")
    expect(b.locator("#group-info")).to_contain_text("you: admin")
    member_dialog(a, "bob").get_by_role("button", name="Mute").click()
    expect(bob_row).to_contain_text("muted")
    member_dialog(a, "bob").get_by_role("button", name="Unmute").click()
    expect(bob_row).not_to_contain_text("muted")
    member_dialog(a, "bob").get_by_role("button", name="Remove").click()
    a.get_by_role("dialog", name="Remove bob from the group?").get_by_role(
        "button", name="Remove").click()
    expect(a.locator("#member-list li")).to_have_count(1)
    expect(b.locator("#group-info")).to_contain_text("you left")
    expect(b.get_by_role("textbox", name="Message")).to_be_disabled()
    pair.alice.check_clean()
    pair.bob.check_clean()


def test_an_open_group_a_joiner_is_approved_for_and_joins_by_id(pair: Pair) -> None:
    a, b = pair.alice.page, pair.bob.page
    create_group(a, "hall", policy="whitelist")
    send(a, "welcome to the hall")
    group_id = a.locator("#group-id").inner_text()
    assert re.fullmatch(r"[0-9a-f]{64}", group_id)
    a.get_by_label("Peer to approve").select_option(label="bob")
    a.get_by_role("button", name="Approve").click()
    expect(a.get_by_role("list", name="Approved peers")).to_contain_text("bob")
    b.get_by_role("button", name="Find open groups").click()
    dialog = b.get_by_role("dialog", name="Open groups nearby")
    expect(dialog.get_by_role("status")).to_contain_text("mDNS")  # these nodes run without
    dialog.get_by_label("Group id").fill(group_id)
    dialog.get_by_role("button", name="Join by id").click()
    expect(group_button(b, "hall")).to_have_attribute("aria-current", "page")
    expect(message(b, "welcome to the hall")).to_be_visible()
    send(b, "glad to be here")
    expect(message(a, "glad to be here")).to_be_visible()
    expect(a.locator("#member-list li", has_text="bob")).to_be_visible()
    pair.alice.check_clean()
    pair.bob.check_clean()


def test_the_page_never_builds_html_from_strings() -> None:
    """No innerHTML and the like, no eval, no inline script or style in the page's files."""
    static = ROOT / "node" / "web" / "static"
    for path in static.glob("*.js"):
        code = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                     "eval(", "new Function", "setAttribute(\"style\"", "setAttribute(\"on"):
            assert sink not in code, f"{path.name} uses {sink}"
    html = (static / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "an inline <script>"
    assert not re.search(r"\sstyle=|\son[a-z]+=", html), "an inline style or handler"


def set_hidden(page: Page, hidden: bool) -> None:
    """What the browser does when the tab goes to the background (or comes back)."""
    page.evaluate("""hidden => {
      Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
      Object.defineProperty(document, "visibilityState",
                            {value: hidden ? "hidden" : "visible", configurable: true});
      document.dispatchEvent(new Event("visibilitychange"));
    }""", hidden)


def test_a_hidden_page_marks_nothing_read_until_it_is_shown(pair: Pair) -> None:
    a, b = both_in_a_group(pair, "away")
    send(a, "are you there?")
    expect(message(a, "are you there?").locator(".delivery")).to_contain_text("read by bob")
    set_hidden(b, True)
    try:
        send(a, "still there?")
        expect(message(b, "still there?")).to_be_visible()  # drawn, but not read
        expect(group_button(b, "away").locator(".badge")).to_have_text("1")
        expect(b).to_have_title(re.compile(r"^\(\d+\) Kith$"))
        expect(message(a, "still there?").locator(".delivery")).to_have_text("✓✓ delivered")
    finally:
        set_hidden(b, False)
    expect(message(a, "still there?").locator(".delivery")).to_contain_text("read by bob")
    pair.bob.check_clean()
